"""Two clones on one machine: each has its own step image (`sentclf-step:<checkout id>`), pinned in its
MLproject files for `mlflow run <step>` as typed, while the repository keeps the canonical `latest` there
(a git filter); each labels what it builds and starts with its checkout, so leftover checks count only
their own. The builds are faked here (no image is built); git is real."""

import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from conductor import step_image as step_image_module
from conductor.local_backend import LocalBackend
from conductor.step_cache import code_fingerprint
from conductor.step_image import STEP_IMAGE_SOURCES, ensure_step_image, pin_checkout_images
from sentclf import containers, images
from sentclf.images import (
    CANONICAL_TAG,
    CHECKOUT_ENV,
    CHECKOUT_LABEL,
    SOURCE_HASH_LABEL,
    checkout_filter,
    checkout_id,
    pin_images,
    pinned_image,
    score_image,
    step_image,
)
from tests.conftest import REPO_ROOT

STEPS_WITH_STEP_IMAGE = ("preprocess", "train", "building", "evaluate", "monitor")


def test_each_checkout_has_its_own_id_and_images(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    assert checkout_id(one) == checkout_id(one / ".." / "one") != checkout_id(two)
    assert step_image(one) == f"sentclf-step:{checkout_id(one)}"
    assert score_image(one) == f"sentclf-score:{checkout_id(one)}"
    assert checkout_filter(one) == f"{CHECKOUT_LABEL}={checkout_id(one)}"
    # On the host the package's own repository is this checkout.
    assert step_image() == step_image(REPO_ROOT)


def test_in_a_step_container_the_checkout_is_the_step_images(monkeypatch):
    monkeypatch.setenv(CHECKOUT_ENV, "0123456789ab")
    assert step_image() == "sentclf-step:0123456789ab"
    assert containers.checkout_labels() == {CHECKOUT_LABEL: "0123456789ab"}


def test_every_step_mlproject_names_the_step_image_pinned_or_canonical():
    for step in STEPS_WITH_STEP_IMAGE:
        assert pinned_image(REPO_ROOT / step) in (f"sentclf-step:{CANONICAL_TAG}", step_image(REPO_ROOT)), (
            step
        )
    assert pinned_image(REPO_ROOT / "score") in (f"sentclf-score:{CANONICAL_TAG}", score_image(REPO_ROOT))


def test_pinning_touches_only_the_image_line():
    text = (REPO_ROOT / "train" / "MLproject").read_text()
    pinned = pin_images(text, "0123456789ab")
    assert "  image: sentclf-step:0123456789ab\n" in pinned
    changed = [(a, b) for a, b in zip(text.splitlines(), pinned.splitlines(), strict=True) if a != b]
    assert len(changed) <= 1
    assert pin_images(pinned, CANONICAL_TAG) == pin_images(text, CANONICAL_TAG)


def test_a_pinned_mlproject_keys_the_step_cache_as_the_canonical_one(tmp_path):
    """The checkout's tag in an MLproject must not change its step's cache key (nor the image's sources)."""
    project = tmp_path / "project"
    shutil.copytree(REPO_ROOT / "train", project / "train", ignore=shutil.ignore_patterns("__pycache__"))
    for name in sorted({Path(source).parts[0] for source in STEP_IMAGE_SOURCES}):  # the image's sources
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, project / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, project / name)
    mlproject = project / "train" / "MLproject"
    mlproject.write_text(pin_images(mlproject.read_text(), CANONICAL_TAG))
    canonical = code_fingerprint(project, "train")
    mlproject.write_text(pin_images(mlproject.read_text(), checkout_id(project)))
    assert code_fingerprint(project, "train") == canonical
    mlproject.write_text(mlproject.read_text() + "# a real change\n")
    assert code_fingerprint(project, "train") != canonical


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


@pytest.fixture
def origin(tmp_path) -> Path:
    """A tiny repository as this one holds its MLproject files: canonical tags, the filter declared."""
    if shutil.which("git") is None:
        pytest.skip("no git")
    repo = tmp_path / "origin"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "scripts" / "pin-step-image", repo / "scripts")
    shutil.copy(REPO_ROOT / ".gitattributes", repo)
    for step in ("train", "score"):
        (repo / step).mkdir()
        shutil.copy(REPO_ROOT / step / "MLproject", repo / step)
        path = repo / step / "MLproject"
        path.write_text(pin_images(path.read_text(), CANONICAL_TAG))
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "origin")
    return repo


def test_two_clones_pin_their_own_images_and_git_sees_the_canonical_files(origin, tmp_path):
    clones = [tmp_path / "nightly", tmp_path / "alice"]
    for clone in clones:
        subprocess.run(["git", "clone", "-q", str(origin), str(clone)], check=True)
        changed = pin_checkout_images(clone)
        assert {p.parent.name for p in changed} == {"train", "score"}
        assert pinned_image(clone / "train") == step_image(clone)
        assert pinned_image(clone / "score") == score_image(clone)
        assert git(clone, "status", "--porcelain") == ""  # nothing to commit: the filter cleans the tag
        assert pin_checkout_images(clone) == []  # pinned once, left alone after
    assert pinned_image(clones[0] / "train") != pinned_image(clones[1] / "train")

    # A real change in a pinned file commits with the canonical tag; a fresh checkout gets its own.
    alice = clones[1]
    (alice / "train" / "MLproject").write_text((alice / "train" / "MLproject").read_text() + "# edited\n")
    git(alice, "commit", "-qam", "edit")
    assert f"image: sentclf-step:{CANONICAL_TAG}" in git(alice, "show", "HEAD:train/MLproject")
    (alice / "train" / "MLproject").unlink()
    git(alice, "checkout", "--", "train/MLproject")
    assert pinned_image(alice / "train") == step_image(alice)


class FakeImages:
    """The engine's images: what was built, with its labels."""

    def __init__(self) -> None:
        self.labels: dict[str, dict[str, str]] = {"python:3.11-slim": {}}

    def get(self, name: str) -> SimpleNamespace:
        if name not in self.labels:
            import docker.errors

            raise docker.errors.ImageNotFound(name)
        return SimpleNamespace(id=f"sha256:{name}", labels=self.labels[name], tags=[name])


def test_two_clones_build_their_own_step_images_and_never_each_others(tmp_path, monkeypatch):
    client = SimpleNamespace(images=FakeImages())
    builds: list[tuple[str, dict, dict, str]] = []

    def fake_build(client_, root, tag, buildargs, labels, cache_tag=None):
        builds.append((tag, buildargs, labels, cache_tag))
        client.images.labels[tag] = labels

    monkeypatch.setattr(
        step_image_module, "resolve_base_image", lambda client_, requested: "python:3.11-slim"
    )
    monkeypatch.setattr(step_image_module, "write_build_inputs", lambda inputs: None)
    monkeypatch.setattr(step_image_module, "download_torch_wheel", lambda root, wheels: None)
    monkeypatch.setattr(step_image_module, "build_with_builder_cache", fake_build)
    monkeypatch.setattr(step_image_module, "configure_git_filter", lambda root: False)
    clones = []
    for name in ("nightly", "alice"):
        clone = tmp_path / name
        (clone / "requirements").mkdir(parents=True)
        for source in (
            "Dockerfile",
            "requirements/torch.txt",
            "requirements/step.txt",
            "requirements/step.lock",
        ):
            shutil.copy(REPO_ROOT / source, clone / source)
        shutil.copytree(
            REPO_ROOT / "sentclf", clone / "sentclf", ignore=shutil.ignore_patterns("__pycache__")
        )
        (clone / "server").mkdir()
        (clone / "sentclf_runtime").mkdir()
        (clone / "train").mkdir()
        (clone / "train" / "MLproject").write_text(
            pin_images((REPO_ROOT / "train" / "MLproject").read_text(), CANONICAL_TAG)
        )
        clones.append(clone)

    tags = [ensure_step_image(client, clone) for clone in clones]
    assert tags == [step_image(clone) for clone in clones] and tags[0] != tags[1]
    for (tag, buildargs, labels, cache_tag), clone in zip(builds, clones, strict=True):
        assert buildargs["SENTCLF_CHECKOUT"] == labels[CHECKOUT_LABEL] == checkout_id(clone)
        assert SOURCE_HASH_LABEL in labels
        assert cache_tag == f"sentclf-step-builder:{checkout_id(clone)}"  # builder stages apart too
        assert pinned_image(clone / "train") == tag
    # Each clone's image stays up to date whatever the other does: no rebuild back and forth.
    (clones[1] / "sentclf" / "schema.py").write_text(
        (clones[1] / "sentclf" / "schema.py").read_text() + "\n# b\n"
    )
    assert ensure_step_image(client, clones[1]) == tags[1]
    assert ensure_step_image(client, clones[0]) == tags[0]
    assert [b[0] for b in builds] == [tags[0], tags[1], tags[1]]


def test_the_conductors_step_containers_carry_the_pipeline_and_the_checkout(tmp_path):
    backend = LocalBackend(tmp_path, "run123")
    assert backend.docker_args["label"] == "sentclf.pipeline-run-id=run123"
    assert backend.docker_args["l"] == checkout_filter(tmp_path)  # docker's short form of --label


def test_the_filter_script_computes_the_id_python_does(tmp_path):
    smudged = subprocess.run(
        [str(REPO_ROOT / "scripts" / "pin-step-image"), "smudge"],
        input="docker_env:\n  image: sentclf-step:latest\n",
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    assert smudged == f"docker_env:\n  image: {step_image(tmp_path)}\n"
    cleaned = subprocess.run(
        [str(REPO_ROOT / "scripts" / "pin-step-image"), "clean"],
        input=smudged,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert cleaned == "docker_env:\n  image: sentclf-step:latest\n"
    assert images.pin_images(smudged, CANONICAL_TAG) == cleaned


def test_pinning_never_stages_a_users_edit(origin, tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(origin), str(clone)], check=True)
    mlproject = clone / "train" / "MLproject"
    mlproject.write_text(mlproject.read_text() + "# work in progress\n")
    pin_checkout_images(clone)
    assert pinned_image(clone / "train") == step_image(clone)
    assert git(clone, "diff", "--cached", "--name-only") == ""  # nothing staged behind the user's back
    diff = git(clone, "diff", "--", "train/MLproject")
    assert "+# work in progress" in diff and "image:" not in diff
