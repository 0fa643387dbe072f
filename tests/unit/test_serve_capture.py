"""`make serve CAPTURE=<folder>`: the folder is mounted where the server captures, or a clear error."""

import pytest

from tools.serve import ServeError, capture_volume


def test_a_capture_folder_is_mounted_read_write_where_the_server_writes(tmp_path):
    env, volumes = capture_volume(tmp_path)
    assert env == {"CAPTURE_DIR": "/traffic"}
    assert volumes == {str(tmp_path.resolve()): {"bind": "/traffic", "mode": "rw"}}


def test_a_missing_capture_folder_names_the_fix(tmp_path):
    with pytest.raises(ServeError, match=r"does not exist: mkdir -p .*missing && chmod 777"):
        capture_volume(tmp_path / "missing")
