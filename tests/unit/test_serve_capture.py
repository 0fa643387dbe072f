"""`make serve CAPTURE=<folder> FEEDBACK=<folder>`: the folders are mounted where the server writes, or a
clear error."""

import pytest

from tools.serve import ServeError, capture_volume, server_volumes


def test_a_capture_folder_is_mounted_read_write_where_the_server_writes(tmp_path):
    env, volumes = capture_volume(tmp_path)
    assert env == {"CAPTURE_DIR": "/traffic"}
    assert volumes == {str(tmp_path.resolve()): {"bind": "/traffic", "mode": "rw"}}


def test_a_missing_capture_folder_names_the_fix(tmp_path):
    with pytest.raises(ServeError, match=r"does not exist: mkdir -p .*missing && chmod 777"):
        capture_volume(tmp_path / "missing")


def test_a_feedback_folder_turns_the_endpoint_on_and_one_folder_for_both_is_one_volume(tmp_path):
    traffic, labels = tmp_path / "traffic", tmp_path / "labels"
    traffic.mkdir()
    labels.mkdir()
    env, volumes = server_volumes(traffic, labels)
    assert env == {"CAPTURE_DIR": "/traffic", "FEEDBACK_DIR": "/feedback"}
    assert volumes[str(labels.resolve())] == {"bind": "/feedback", "mode": "rw"} and len(volumes) == 2
    env, volumes = server_volumes(traffic, traffic)
    assert env == {"CAPTURE_DIR": "/traffic", "FEEDBACK_DIR": "/traffic"} and len(volumes) == 1
    assert server_volumes(None, None) == ({}, {})
    with pytest.raises(ServeError, match=r"does not exist: mkdir -p .*missing"):
        server_volumes(None, tmp_path / "missing")
