"""The contract between rooms (sentclf.contract): each name one room writes and another reads is written
once. The names are listed from the module itself, so a name added there is guarded at once; the code of
every room that reads or writes the tracking store is scanned with `ast` for a copy written as a literal."""

import ast
from pathlib import Path

import pytest

from sentclf import contract
from sentclf.contract import MODELS_URI_SCHEME, ModelRef, MonitorVerdict, model_uri, parse_model_uri
from tests.conftest import REPO_ROOT

CONTRACT_FILE = REPO_ROOT / "sentclf" / "contract.py"
# The rooms that talk through the tracking store. Not scanned: tests (they state the contract's values),
# server/ (self-contained: it never sees a run or a tag), bench/ and examples/ (their dict keys are their
# own figures, not names another room reads).
ROOMS = (
    "sentclf",
    "conductor",
    "tools",
    "ops",
    "preprocess",
    "train",
    "building",
    "evaluate",
    "monitor",
    "score",
)
ROOT_FILES = ("main.py",)
# Messages and patterns, not names: a literal equal to one of these is prose.
NOT_NAMES = {"MODEL_URI_FORMS"}
# The capture record's fields are plain words ("model", "label", "id", ...) that every room spells for its
# own meanings (columns, JSON keys): the scan cannot tell a copy, so these are held by their importers and
# tests/server/test_shared_names.py instead.
PLAIN_WORDS = set(contract.CAPTURE_FIELDS)
# One name under two constants on purpose, each with the reason (the scan's message names the first).
SAME_NAME = {
    (
        "HEADLINE_VERSION_METRIC",
        "MODEL_VERSION_TAG",
    ): "the parent run carries the version as a tag and a metric",
}
# The same spelling with another meaning, each with the reason (a short list: a new entry needs one).
OTHER_MEANINGS = {
    ("sentclf/server_images.py", "served_model_name"): "a function's name in __all__",
    ("ops/promote_live.py", "promoted"): "a key of promote_live's --summary-file JSON (ops reads it)",
    ("ops/promote_live.py", "summary"): "a key of promote_live's --summary-file JSON (ops reads it)",
    ("ops/nightly.py", "promoted"): "a key of promote_live's --summary-file JSON",
    ("ops/nightly.py", "summary"): "a key of promote_live's --summary-file JSON",
    ("ops/retrain_when.py", "drift"): "RETRAIN_WHEN=drift, a choice of the command line",
    ("evaluate/results.py", "summary"): "a key of evaluation/report.json",
    ("preprocess/sources/readers.py", "label_names"): "a key of a read frame's attrs",
    (
        "conductor/kube/manifests.py",
        "server_image",
    ): "evaluate's MLproject parameter (the building run's tag)",
}


def contract_names() -> dict[str, str]:
    """value -> the contract's constant, for every name the module holds."""
    return {
        value: constant
        for constant, value in vars(contract).items()
        if constant.isupper() and not constant.startswith("_") and constant not in NOT_NAMES
        if isinstance(value, str) and value not in PLAIN_WORDS
    }


def prefixes() -> dict[str, str]:
    """Prefixes whose every extension is a contract name too (`input.<name>`, `models:/...`)."""
    return {
        value: constant
        for constant, value in vars(contract).items()
        if constant.endswith("_PREFIX") or constant == "MODELS_URI_SCHEME"
        if isinstance(value, str)
    }


def scanned_files() -> list[Path]:
    files = [REPO_ROOT / name for name in ROOT_FILES]
    for room in ROOMS:
        files += [p for p in (REPO_ROOT / room).rglob("*.py") if "__pycache__" not in p.parts]
    return sorted(p for p in files if p.is_file() and p != CONTRACT_FILE)


def docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring nodes (prose may name a tag)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def named_constant(text: str, names: dict[str, str], starts: dict[str, str]) -> str | None:
    """The contract constant a literal copies: the whole literal, an extension of a prefix, or a name
    inside a search filter (tags.`gate.decision` = ..., metrics.server_memory_peak_mb > ...)."""
    if text in names:
        return names[text]
    for prefix, constant in starts.items():
        if text.startswith(prefix) and " " not in text:
            return constant
    for name, constant in names.items():
        if f"tags.`{name}`" in text or f"tags.{name} " in text or f"metrics.{name} " in text:
            return constant
    return None


def literal_copies(
    path: Path, names: dict[str, str], starts: dict[str, str], root: Path = REPO_ROOT
) -> list[str]:
    relative = path.relative_to(root).as_posix()
    tree = ast.parse(path.read_text(), str(path))
    skip = docstrings(tree)
    copies = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Constant) or not isinstance(node.value, str) or id(node) in skip:
            continue
        constant = named_constant(node.value, names, starts)
        if constant and (relative, node.value) not in OTHER_MEANINGS:
            copies.append(f"{relative}:{node.lineno}: {node.value!r} (use contract.{constant})")
    return copies


def test_no_room_writes_a_contract_name_as_a_literal():
    names, starts = contract_names(), prefixes()
    copies = [copy for path in scanned_files() for copy in literal_copies(path, names, starts)]
    assert not copies, "cross-room names written as literals:\n" + "\n".join(copies)


def test_the_scan_finds_a_literal_copy(tmp_path):
    """The guard itself can fail: a tag, an input tag and a model URI written as literals are all found."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        '"""A docstring may say gate.decision."""\n'
        'tags = run.data.tags.get("gate.decision")\n'
        'sha = tags.get("input.dataset_sha256")\n'
        'uri = f"models:/{name}/{version}"\n'
        "runs = search(filter_string=f\"tags.`input.server_image` = '{image}'\")\n"
        'fine = "a sentence about the champion"\n'
    )
    copies = literal_copies(sample, contract_names(), prefixes(), tmp_path)
    found = [copy.rsplit("contract.", 1)[1].rstrip(")") for copy in copies]
    assert found == [
        "GATE_DECISION_TAG",
        "INPUT_DATASET_SHA256_TAG",
        "MODELS_URI_SCHEME",
        "INPUT_SERVER_IMAGE_TAG",
    ]


def test_the_contract_names_are_unique():
    """Two constants with one value would make the scan (and a reader) unsure which one is meant."""
    seen: dict[str, str] = {}
    for constant, value in vars(contract).items():
        if constant.isupper() and not constant.startswith("_") and isinstance(value, str):
            same = (constant, seen.get(value)) in SAME_NAME or (seen.get(value), constant) in SAME_NAME
            assert value not in seen or same, f"{constant} and {seen[value]} are both {value!r}"
            seen[value] = constant


@pytest.mark.parametrize(
    "uri, expected",
    [
        ("models:/cola-classifier/3", ModelRef("cola-classifier", "3")),
        ("models:/cola-classifier@champion", ModelRef("cola-classifier", alias="champion")),
        (" models:/trec@challenger ", ModelRef("trec", alias="challenger")),
    ],
)
def test_model_uris_parse_and_print_back(uri, expected):
    assert parse_model_uri(uri) == expected
    assert parse_model_uri(expected.uri) == expected


@pytest.mark.parametrize(
    "uri", ["models:/x", "models:/x/latest", "runs:/abc/model", "models:/a/b/1", "x@y", ""]
)
def test_a_model_uri_of_neither_form_names_both(uri):
    with pytest.raises(ValueError, match="models:/<name>/<version> or models:/<name>@<alias>"):
        parse_model_uri(uri)


def test_a_model_uri_names_a_version_or_an_alias():
    assert model_uri("m", 2) == f"{MODELS_URI_SCHEME}m/2"
    with pytest.raises(ValueError):
        model_uri("m")
    with pytest.raises(ValueError):
        model_uri("m", 2, "champion")


def test_the_monitor_verdict_round_trips_through_its_line():
    verdict = MonitorVerdict(True, ("tokens", "confidence"), 0.2)
    output = f"INFO something\n{verdict.line()}\n=== Run succeeded ===\n"
    assert MonitorVerdict.from_output(output) == verdict
    assert verdict.tags() == {contract.DRIFT_TAG: "true", contract.DRIFT_FEATURES_TAG: "tokens,confidence"}
    assert MonitorVerdict(False, (), 0.2).tags()[contract.DRIFT_FEATURES_TAG] == "none"
    assert "live" not in verdict.as_dict()


def test_the_live_loops_part_travels_with_the_verdict():
    """One verdict type: with feedback, the live figures are part of the verdict (verdict.json, the line)."""
    live = {"joined": {"used": 100}, "versions": {"3": {"labels": 100}}}
    verdict = MonitorVerdict(False, (), 0.2, live=live)
    assert MonitorVerdict.from_output(verdict.line()) == verdict
    assert verdict.as_dict()["live"]["joined"] == {"used": 100}


@pytest.mark.parametrize("output", ["", "monitor verdict: drift=true features=tokens", "monitor verdict: {}"])
def test_no_verdict_line_reads_as_none(output):
    assert MonitorVerdict.from_output(output) is None
