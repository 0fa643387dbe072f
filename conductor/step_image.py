"""The step image every step runs in, kept up to date by the conductor: built from the Dockerfile, the step
requirements, the shared package `sentclf`, the runtime `sentclf_runtime/` and the server's sources `server/`
(and nothing else, so a change to the conductor rebuilds no image and reruns no step). One per checkout
(`sentclf-step:<checkout id>`, sentclf.images): ensuring it also writes that tag into the steps' MLproject
files, so `mlflow run <step>` as typed runs this checkout's image, and sets up the git filter that keeps the
repository's canonical `latest` there (scripts/pin-step-image). Run as `python -m conductor.step_image
{ensure-base,ensure-step,ensure-score,lock-step}` (`make step-image`, `make score-image`; ensure-score
builds the score sub-project's image FROM it; lock-step rewrites requirements/step.lock: `make step-lock`)."""

import argparse
import contextlib
import logging
import re
import subprocess
import sys
from pathlib import Path

import docker

from sentclf.engine import docker_client
from sentclf.images import (
    CHECKOUT_LABEL,
    SOURCE_HASH_LABEL,
    ImageError,
    build_image,
    build_with_builder_cache,
    checkout_id,
    image_exists,
    pin_images,
    resolve_base_image,
    score_image,
    source_hash,
    step_image,
    write_build_inputs,
)

logger = logging.getLogger(__name__)

# What the step image is built from: a change to any of these rebuilds it.
STEP_IMAGE_SOURCES = (
    "Dockerfile",
    "requirements/torch.txt",
    "requirements/step.txt",
    "requirements/step.lock",
    "sentclf",
    "sentclf_runtime",
    "server",
)


def download_torch_wheel(root: Path, wheel_dir: Path) -> None:
    """Put the pinned torch wheel into the build context: pip inside `docker build` sees neither this
    machine's find-links nor its pip configuration, and would otherwise pull the CUDA build."""
    requirement = next(
        line.strip()
        for line in (root / "requirements" / "torch.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    wheel_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "-d",
            str(wheel_dir),
            requirement,
        ],
        check=True,
    )


def ensure_step_image(
    client: docker.DockerClient, root: Path, base_image: str = "auto", force: bool = False
) -> str:
    """Build the checkout's step image from the project at `root` unless one built from the same sources and
    base image exists; then pin it in the steps' MLproject files."""
    tag, checkout = step_image(root), checkout_id(root)
    base = resolve_base_image(client, base_image)
    base_id = client.images.get(base).id
    wanted = source_hash(root, STEP_IMAGE_SOURCES, extra=base_id)
    current = client.images.get(tag).labels if image_exists(client, tag) else {}
    if not force and current.get(SOURCE_HASH_LABEL) == wanted:
        logger.info("%s is up to date (sources %s)", tag, wanted)
    else:
        inputs = root / ".build" / "inputs"
        write_build_inputs(inputs)
        download_torch_wheel(root, inputs / "wheels")
        build_with_builder_cache(
            client,
            root,
            tag,
            {"BASE_IMAGE": base, "SENTCLF_CHECKOUT": checkout},
            {SOURCE_HASH_LABEL: wanted, CHECKOUT_LABEL: checkout},
            cache_tag=f"{tag.rsplit(':', 1)[0]}-builder:{checkout}",
        )
    pin_checkout_images(root)
    return tag


# The git filter (see .gitattributes) that keeps the canonical tag in the repository and puts the
# checkout's tag into the working tree on checkout.
GIT_FILTER = "sentclf-image"
FILTER_SCRIPT = "scripts/pin-step-image"


def pin_checkout_images(root: Path) -> list[Path]:
    """Write the checkout's tag into every MLproject that names the step or score image (the files that
    change), and make git see them as the repository holds them."""
    in_git = configure_git_filter(root)
    changed = []
    for mlproject in sorted(root.glob("*/MLproject")):
        text = mlproject.read_text()
        pinned = pin_images(text, checkout_id(root))
        if pinned != text:
            mlproject.write_text(pinned)
            changed.append(mlproject)
            if in_git:
                refresh_index(root, mlproject)
    if changed:
        logger.info("%s pinned in %s", step_image(root), ", ".join(p.parent.name for p in changed))
    return changed


def refresh_index(root: Path, path: Path) -> None:
    """Make git see a pinned file as unchanged. The filter cleans its content to the committed text, but git
    takes a file whose size changed for modified without reading it: re-adding a file whose cleaned content
    is the index's own records only its new size. A file with real edits is left as it is (not staged)."""
    relative = str(path.relative_to(root))
    git = ["git", "-C", str(root)]
    unchanged = subprocess.run([*git, "diff", "--quiet", "--", relative], check=False).returncode == 0
    if unchanged:
        subprocess.run([*git, "add", "--", relative], check=False)


def filter_command(direction: str) -> str:
    """The filter as git runs it (through sh, from the top of the working tree). A checkout that writes the
    MLproject files before scripts/ (a `git worktree add`, a clone whose config has the filter) passes them
    through unchanged instead of failing; `make images` pins them afterwards."""
    return f"[ -f {FILTER_SCRIPT} ] && exec sh {FILTER_SCRIPT} {direction} || exec cat"


def configure_git_filter(root: Path) -> bool:
    """Set up the clean/smudge filter in the checkout's git config (a clone without git: nothing to do)."""
    if not (root / ".git").exists() or not (root / FILTER_SCRIPT).is_file():
        return False
    for direction in ("clean", "smudge"):
        subprocess.run(
            [
                "git",
                "-C",
                str(root),
                "config",
                f"filter.{GIT_FILTER}.{direction}",
                filter_command(direction),
            ],
            check=True,
        )
    return True


# The score sub-project's image (Spark and Java on top of the step image): rebuilt when its own sources
# change or the step image it is built FROM does.
SCORE_IMAGE_SOURCES = ("score/Dockerfile", "score/.dockerignore", "score/requirements.txt")


def ensure_score_image(
    client: docker.DockerClient, root: Path, base_image: str = "auto", force: bool = False
) -> str:
    """The checkout's score image, built FROM its up-to-date step image unless one of the same sources
    exists."""
    step = ensure_step_image(client, root, base_image)
    tag = score_image(root)
    wanted = source_hash(root, SCORE_IMAGE_SOURCES, extra=client.images.get(step).id)
    current = client.images.get(tag).labels if image_exists(client, tag) else {}
    if not force and current.get(SOURCE_HASH_LABEL) == wanted:
        logger.info("%s is up to date (sources %s)", tag, wanted)
        return tag
    superseded = client.images.get(tag).id if image_exists(client, tag) else None
    labels = {SOURCE_HASH_LABEL: wanted, CHECKOUT_LABEL: checkout_id(root)}
    build_image(client, root / "score", tag, {"STEP_IMAGE": step}, labels)
    if superseded and superseded != client.images.get(tag).id:
        with contextlib.suppress(docker.errors.APIError):
            client.images.remove(superseded)
    return tag


STEP_LOCK_HEADER = """\
# Complete lock of the step image's Python environment (every package, transitive ones included), used as
# pip constraints by the Dockerfile so that a rebuild installs exactly these versions. Python 3.11, Linux.
# The direct dependencies and their reasons live in step.txt; torch in torch.txt (its wheel's local
# version, +cpu or not, depends on the index it comes from, so it is not locked here).
# Regenerate after changing step.txt or torch.txt: make step-lock
"""
# Not locked: torch (see the header) and the venv's own pip.
_UNLOCKED = re.compile(r"^(torch|pip)==", re.IGNORECASE)


def write_step_lock(client: docker.DockerClient, root: Path, base_image: str = "auto") -> Path:
    """Resolve step.txt and torch.txt afresh in a throw-away build (the lock ignored), and write what pip
    installed there as requirements/step.lock."""
    base = resolve_base_image(client, base_image)
    inputs = root / ".build" / "inputs"
    write_build_inputs(inputs)
    download_torch_wheel(root, inputs / "wheels")
    tag = f"{step_image(root)}-unlocked"
    build_image(client, root, tag, {"BASE_IMAGE": base, "STEP_LOCK": "false"})
    try:
        frozen = client.containers.run(
            tag, ["/opt/venv/bin/pip", "freeze", "--all"], remove=True, network_mode="host"
        ).decode()
    finally:
        client.images.remove(tag, force=True)
    pins = [line for line in frozen.splitlines() if line.strip() and not _UNLOCKED.match(line)]
    lock = root / "requirements" / "step.lock"
    lock.write_text(STEP_LOCK_HEADER + "\n".join(pins) + "\n")
    logger.info("wrote %s (%d packages)", lock, len(pins))
    return lock


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["ensure-base", "ensure-step", "ensure-score", "lock-step"])
    parser.add_argument("--base-image", default="auto")
    parser.add_argument("--root", default=".", help="the project directory (default: the current one)")
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    client = docker_client()
    try:
        if args.command == "ensure-base":
            print(resolve_base_image(client, args.base_image))
        elif args.command == "ensure-score":
            print(ensure_score_image(client, Path(args.root).resolve(), args.base_image, args.force))
        elif args.command == "lock-step":
            print(write_step_lock(client, Path(args.root).resolve(), args.base_image))
        else:
            print(ensure_step_image(client, Path(args.root).resolve(), args.base_image, args.force))
    except ImageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
