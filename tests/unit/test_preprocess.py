"""The preprocess room: sources, validation, splitting, and the step run against a real tracking store.

Also the helpers of the other preprocess test modules: the step's argv from its MLproject, and one
tracking store shared by their tests (a fresh experiment each), since creating a sqlite store costs
seconds and an experiment milliseconds.
"""

import json
import shlex
import uuid
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from mlflow.entities import Run

from sentclf.dataset_snapshot import build_manifest
from sentclf.schema import LABEL_COLUMN, TEXT_COLUMN
from sentclf.tracking import StepInputError

import preprocess
from labels import resolve_labels
from profiling import backbone_tokenizer
from sources import SHIPPED_COLA_DIR, load_cola, read_cola_tsv
from splitting import stratified_split
from unlabelled import new_texts
from validation import ValidationReport, validate_frame, validate_parts

MLPROJECT = Path(preprocess.__file__).with_name("MLproject")
VOCABULARY = (
    "the a cat dog bird saw chased gave book to Mary John quickly slowly red big small house garden "
    "who what that which ran read wrote seemed happy old new under over near child teacher"
)
WORDS = np.array(VOCABULARY.split())


def write_tsv(path, rows):
    path.write_text("".join(f"src\t{label}\t\t{text}\n" for label, text in rows), encoding="utf-8")
    return path


def synthetic_frame(
    rows: int, seed: int, min_words: int = 4, max_words: int = 14, share_acceptable: float = 0.7
) -> pd.DataFrame:
    """Random sentences (sentence, label int); distinct seeds give distinct, rarely shared sentences."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_words, max_words + 1, rows)
    texts = [" ".join(rng.choice(WORDS, length)).capitalize() + "." for length in lengths]
    labels = (rng.random(rows) < share_acceptable).astype(int)
    return pd.DataFrame({TEXT_COLUMN: texts, LABEL_COLUMN: labels})


def write_cola_tsv(frame: pd.DataFrame, path: Path) -> Path:
    """`frame` in CoLA's headerless raw layout."""
    return write_tsv(path, zip(frame[LABEL_COLUMN], frame[TEXT_COLUMN], strict=True))


def step_argv(**overrides: object) -> list[str]:
    """The MLproject command with its defaults (or `overrides`) as preprocess.main's argv, so every test
    also checks that MLproject and the argparse agree."""
    entry = yaml.safe_load(MLPROJECT.read_text())["entry_points"]["main"]
    values = {name: spec["default"] for name, spec in entry["parameters"].items()}
    # The label audit embeds every row with the backbone: its own tests turn it on
    # (test_analysis_label_audit.py).
    values = values | {"label_audit": "false"} | overrides
    assert set(values) == set(entry["parameters"]), "override of a parameter MLproject does not declare"
    program = shlex.split(entry["command"].format(**{k: shlex.quote(str(v)) for k, v in values.items()}))
    assert program[:2] == ["python", "preprocess.py"]
    return program[2:]


_STORE: dict[str, tuple[str, Path]] = {}


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    """(tracking URI, artifact root) of one sqlite store for every preprocess test module.

    Memoised here because each module that re-binds this fixture gets its own fixture definition."""
    if "store" not in _STORE:
        root = tmp_path_factory.mktemp("mlflow")
        _STORE["store"] = (f"sqlite:///{root}/mlflow.db", root)
    return _STORE["store"]


@pytest.fixture
def experiment(store, monkeypatch):
    """A fresh experiment in the module's store; its id."""
    uri, root = store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    name = uuid.uuid4().hex
    experiment_id = mlflow.create_experiment(name, artifact_location=str(root / name))
    mlflow.set_experiment(experiment_id=experiment_id)
    yield experiment_id
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


def newest_run(experiment_id: str) -> Run:
    return mlflow.search_runs(
        experiment_ids=[experiment_id], order_by=["attributes.start_time DESC"], output_format="list"
    )[0]


def artifact_paths(run: Run, path: str | None = None) -> set[str]:
    return {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, path)}


def run_step(experiment_id: str, **overrides: object) -> Run:
    preprocess.main(step_argv(**overrides))
    run = newest_run(experiment_id)
    assert run.info.status == "FINISHED"
    return run


def assert_fails_without_data(experiment_id: str, match: str, **overrides: object) -> Run:
    """The step exits with `match` in its message, its run FAILED and nothing logged under data/."""
    with pytest.raises(SystemExit, match=match):
        preprocess.main(step_argv(**overrides))
    run = newest_run(experiment_id)
    assert run.info.status == "FAILED"
    assert artifact_paths(run, "data") == set()
    return run


def test_shipped_cola_has_the_documented_row_counts():
    source = load_cola()
    assert len(source.frames["train"]) == 8551
    assert len(source.frames["test"]) == 527


def test_non_utf8_bytes_are_reported_with_their_line(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_bytes(b"s\t1\t\tgood sentence\ns\t0\t\tbad \xff byte\n")
    with pytest.raises(StepInputError, match=r"line 2 is not valid UTF-8"):
        read_cola_tsv(path)


@pytest.mark.parametrize(
    ("rows", "check"),
    [
        ([(1, "fine"), (2, "label two"), (0, "ok"), (0, "ok too"), (1, "yes")], "bad_label"),
        ([(1, "fine"), (0, "   "), (0, "ok"), (1, "yes")], "empty_text"),
        ([(1, f"fine {i}") for i in range(7)] + [(0, "only one zero")], "too_few_rows_per_class"),
    ],
)
def test_blocking_problems_name_file_row_and_column(tmp_path, rows, check):
    frame = read_cola_tsv(write_tsv(tmp_path / "in.tsv", rows))
    report = ValidationReport()
    frame = validate_parts([("in.tsv", frame)], "train", report)
    if not report.errors:  # the class counts, once the rows are sound
        resolve_labels({"train": frame}, None, 0.1, 0.1, report)
    assert [p.check for p in report.errors] == [check]
    with pytest.raises(StepInputError, match="in.tsv"):
        report.raise_if_blocking()


def test_bad_label_message_names_the_row(tmp_path):
    frame = read_cola_tsv(write_tsv(tmp_path / "in.tsv", [(1, "a"), (1, "b"), (7, "c"), (0, "d"), (0, "e")]))
    report = ValidationReport()
    validate_frame(frame, "train", "in.tsv", report)
    assert "in.tsv, column label, row(s) 3" in report.errors[0].describe()


def test_duplicates_and_overlap_are_warnings_not_errors():
    train = pd.DataFrame({TEXT_COLUMN: ["a", "a", "b", "c"], LABEL_COLUMN: ["1", "1", "0", "0"]})
    report = ValidationReport()
    train = validate_frame(train, "train", "train.tsv", report)
    assert [p.check for p in report.problems] == ["duplicate_row"]
    test = pd.DataFrame({TEXT_COLUMN: ["b", "z"], LABEL_COLUMN: [0, 1]})
    report.check_cross_split_overlap({"train": train, "validation": train.iloc[:0], "test": test})
    assert "overlap_test_train" in [p.check for p in report.problems]
    assert not report.errors


@settings(max_examples=30, deadline=None)
@given(
    labels=st.lists(st.integers(0, 1), min_size=20, max_size=300),
    fraction=st.floats(0.05, 0.45),
    seed=st.integers(0, 2**16),
)
def test_stratified_split_is_a_deterministic_stratified_partition(labels, fraction, seed):
    frame = pd.DataFrame({TEXT_COLUMN: [f"s{i}" for i in range(len(labels))], LABEL_COLUMN: labels})
    rest, held_out = stratified_split(frame, fraction, seed)
    assert set(rest[TEXT_COLUMN]).isdisjoint(held_out[TEXT_COLUMN])
    assert len(rest) + len(held_out) == len(frame)
    for label in (0, 1):
        count = int((frame[LABEL_COLUMN] == label).sum())
        assert int((held_out[LABEL_COLUMN] == label).sum()) == int(round(count * fraction))
    again_rest, again_held_out = stratified_split(frame, fraction, seed)
    assert again_held_out[TEXT_COLUMN].tolist() == held_out[TEXT_COLUMN].tolist()
    assert again_rest[TEXT_COLUMN].tolist() == rest[TEXT_COLUMN].tolist()


def test_backbone_token_lengths_are_not_padded():
    # The bundled tokenizer.json pads to 128: unchecked, every profiled length would read 128.
    encoding = backbone_tokenizer().encode("a short sentence", add_special_tokens=False)
    assert 2 <= len(encoding.ids) <= 5


def test_mlproject_defaults_parse():
    args = preprocess.parse_args(step_argv())
    assert (args.dataset, args.overlap_policy, args.fail_on_drift) == ("cola", "keep", False)
    assert preprocess.parse_args(step_argv(fail_on_drift="True")).fail_on_drift is True


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"test_fraction": 0.5}, "--test-fraction must be in"),
        ({"overlap_policy": "merge"}, "invalid choice: 'merge'"),
        ({"fail_on_drift": "maybe"}, "expected true or false"),
        ({"label_column": "sentence"}, "two column names"),
        ({"drift_threshold": 0}, "--drift-threshold must be positive"),
    ],
)
def test_bad_parameters_are_rejected(override, message, capsys):
    with pytest.raises(SystemExit):
        preprocess.parse_args(step_argv(**override))
    assert message in capsys.readouterr().err


def test_step_logs_splits_profile_and_lineage(experiment):
    run = run_step(experiment, seed=1)
    assert run.data.metrics["test_rows"] == 527
    assert run.data.metrics["train_rows"] + run.data.metrics["validation_rows"] == 8551
    assert (
        abs(run.data.metrics["validation_share_acceptable"] - run.data.metrics["train_share_acceptable"])
        < 0.01
    )
    assert 5 < run.data.metrics["train_tokens_mean"] < 20
    assert artifact_paths(run, "data") == {
        "data/train.parquet",
        "data/validation.parquet",
        "data/test.parquet",
    }
    assert {
        "schema.json",
        "profile.json",
        "validation_report.json",
        "drift_report.json",
        "profile",
        "logs",
    } <= artifact_paths(run)
    assert run.data.params["drift_reference"] == "none"
    inputs = {i.dataset.name: i for i in run.inputs.dataset_inputs}
    assert set(inputs) == {"train", "validation", "test"}
    assert "preprocess/data/cola/in_domain_dev.tsv" in inputs["test"].dataset.source
    assert [tag.value for tag in inputs["test"].tags] == ["test"]


def test_the_shipped_cola_leaves_its_hashes_but_no_copy_of_its_files(experiment):
    """The model card names the bytes of the default data too; the code commit already pins the files."""
    run = run_step(experiment, seed=1)
    expected = build_manifest(SHIPPED_COLA_DIR)
    assert run.data.tags["input.dataset_sha256"] == expected.sha256
    assert run.data.tags["input.dataset"] == "preprocess/data/cola"
    assert "input.dataset_snapshot" not in run.data.tags
    assert artifact_paths(run, "dataset") == {"dataset/manifest.json"}
    manifest = json.loads(mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/dataset/manifest.json"))
    assert [f["name"] for f in manifest["files"]] == ["in_domain_dev.tsv", "in_domain_train.tsv"]
    assert manifest["sha256"] == expected.sha256


def test_step_with_bad_data_fails_and_logs_no_data(experiment, tmp_path, monkeypatch):
    bad_dir = tmp_path / "cola"
    bad_dir.mkdir()
    write_tsv(bad_dir / "in_domain_train.tsv", [(1, "a"), (1, "b"), (0, "c"), (0, ""), (0, "e")])
    write_tsv(bad_dir / "in_domain_dev.tsv", [(1, "x"), (1, "y"), (0, "z"), (0, "w")])
    monkeypatch.setattr(preprocess, "load_source", lambda dataset, columns, snapshot_dir: load_cola(bad_dir))
    run = assert_fails_without_data(experiment, "row\\(s\\) 4: text is empty", val_fraction=0.2, seed=1)
    assert "validation_report.json" in artifact_paths(run)


def test_unknown_dataset_is_a_clear_error(experiment):
    assert_fails_without_data(experiment, "dataset 'nope.csv': no such file or directory", dataset="nope.csv")


def test_retrain_when_sees_the_shipped_cola_as_what_a_cola_champion_was_trained_on(experiment, tmp_path):
    """RETRAIN_WHEN=drift: the hash preprocess records for `cola` is the one ops.retrain_when computes."""
    from ops import retrain_when

    data_run = run_step(experiment, seed=1)
    client = mlflow.MlflowClient()
    name = f"m{uuid.uuid4().hex[:8]}"
    with mlflow.start_run() as train_run:
        mlflow.set_tag("input.data_run_id", data_run.info.run_id)
    client.create_registered_model(name)
    version = client.create_model_version(name, f"runs:/{train_run.info.run_id}/model", train_run.info.run_id)
    client.set_registered_model_alias(name, "champion", version.version)
    assert retrain_when.SHIPPED_COLA_DIR == SHIPPED_COLA_DIR
    assert not retrain_when.has_new_data("cola", f"models:/{name}@champion")
    other = write_cola_tsv(synthetic_frame(40, seed=9), tmp_path / "mine.tsv")
    assert retrain_when.has_new_data(str(other), f"models:/{name}@champion")
    assert retrain_when.has_new_data("glue/cola", f"models:/{name}@champion")


def test_unlabelled_text_is_logged_without_labelled_sentences_or_repeats(experiment, tmp_path):
    """`unlabelled`: the text a teacher labels (preprocess/unlabelled.py): blanks, repeats and sentences
    already in a labelled split (compared case- and whitespace-insensitively) are skipped."""
    first_cola = read_cola_tsv(SHIPPED_COLA_DIR / "in_domain_train.tsv")[TEXT_COLUMN].iloc[0]
    text = tmp_path / "unlabelled.txt"
    text.write_text(f"A new sentence.\n\n  {first_cola.upper()}  \na new   SENTENCE.\nAnother one here.\n")
    run = run_step(experiment, unlabelled=str(text))
    kept = pd.read_parquet(
        mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="data/unlabelled.parquet")
    )
    assert kept[TEXT_COLUMN].tolist() == ["A new sentence.", "Another one here."]
    metrics = run.data.metrics
    assert (
        metrics["unlabelled_rows"],
        metrics["unlabelled_skipped_labelled"],
        metrics["unlabelled_repeats"],
    ) == (
        2,
        1,
        1,
    )


@pytest.mark.parametrize(
    ("content", "name", "match"),
    [
        (None, "missing.txt", "unlabelled '.*missing.txt': no such file or folder"),
        ("other\nx\n", "texts.csv", "no column 'sentence' .*name the text column with text_column"),
        ("", "empty.txt", "none of its 0 texts is new"),
    ],
)
def test_bad_unlabelled_text_fails_the_step_with_the_fix(experiment, tmp_path, content, name, match):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    assert_fails_without_data(experiment, match, unlabelled=str(path))


def test_unlabelled_text_of_a_pair_task_is_refused(capsys):
    with pytest.raises(SystemExit):
        preprocess.parse_args(step_argv(unlabelled="/tmp/x.txt", text_pair_column="other"))
    assert "a teacher labels single sentences" in capsys.readouterr().err


def test_unlabelled_text_above_the_cap_is_a_seeded_sample_in_the_given_order():
    splits = {"train": pd.DataFrame({TEXT_COLUMN: ["known one"]})}
    texts = ["Known  ONE", *[f"text {i}" for i in range(100)]]
    frame, counts = new_texts(texts, splits, seed=3, max_rows=10)
    again, _ = new_texts(texts, splits, seed=3, max_rows=10)
    kept = frame[TEXT_COLUMN].tolist()
    assert len(kept) == 10 and kept == again[TEXT_COLUMN].tolist()
    assert kept == sorted(kept, key=lambda t: int(t.split()[1]))
    assert counts == {"unlabelled_rows": 10, "unlabelled_skipped_labelled": 1, "unlabelled_repeats": 0}
