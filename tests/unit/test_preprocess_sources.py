"""The preprocess room's sources: local files and directories, hub ids, and the messages for bad input."""

import json
import time

import datasets
import mlflow
import pandas as pd
import pytest
from mlflow.data.huggingface_dataset_source import HuggingFaceDatasetSource

from sentclf.data import read_split
from sentclf.schema import LABEL_COLUMN, TEXT_COLUMN, LabelSet
from sentclf.tracking import StepInputError
from tests.unit import test_preprocess as base

import sources
from sources import Columns, load_source
from sources.hub import parse_hub_id
from sources.readers import is_cola_tsv
from splitting import stratified_split
from validation import ValidationReport, validate_frame, validate_parts

# The shared tracking store and a fresh experiment per test (see test_preprocess).
store = base.store
experiment = base.experiment
CUSTOM = Columns("text", "y")


def write_format(frame: pd.DataFrame, tmp_path, kind: str):
    """`frame` as a file of `kind`, with the user's column names `text`/`y` and an extra column."""
    user = frame.rename(columns={TEXT_COLUMN: "text", LABEL_COLUMN: "y"}).assign(extra="x")
    if kind == "cola-tsv":
        return base.write_cola_tsv(frame, tmp_path / "data.tsv")
    path = tmp_path / f"data.{kind}"
    if kind == "csv":
        user.to_csv(path, index=False)
    elif kind == "tsv":
        user.to_csv(path, index=False, sep="\t")
    elif kind == "parquet":
        user.to_parquet(path, index=False)
    else:  # jsonl, labels alternately int and string: both must work
        user["y"] = [label if i % 2 else str(label) for i, label in enumerate(user["y"])]
        path.write_text("".join(json.dumps(record) + "\n" for record in user.to_dict("records")))
    return path


def loaded_train(dataset: str, columns: Columns = CUSTOM) -> pd.DataFrame:
    frame = load_source(dataset, columns).frames["train"]
    report = ValidationReport()
    frame = validate_frame(frame, "train", "file", report)
    assert not report.errors, [p.describe() for p in report.errors]
    return frame


@pytest.mark.parametrize("kind", ["csv", "tsv", "parquet", "jsonl", "cola-tsv"])
def test_every_local_format_yields_the_same_frame(tmp_path, kind):
    frame = base.synthetic_frame(30, seed=1)
    frame.loc[0, TEXT_COLUMN] = 'He said "no", twice.'  # quotes and a comma survive every format
    loaded = loaded_train(str(write_format(frame, tmp_path, kind)))
    # CoLA's layout keeps its source column for sliced metrics (evaluate/slices.py).
    own = ["source_code"] if kind == "cola-tsv" else []
    assert list(loaded.columns) == [TEXT_COLUMN, LABEL_COLUMN, *own, "row"]
    assert loaded["row"].tolist() == list(range(1, 31))
    pd.testing.assert_frame_equal(loaded[[TEXT_COLUMN, LABEL_COLUMN]], frame, check_dtype=False)


@pytest.mark.parametrize("kind", ["csv", "parquet", "jsonl", "cola-tsv"])
def test_step_on_a_single_file_holds_out_a_stratified_test_split(experiment, tmp_path, kind):
    frame = base.synthetic_frame(80, seed=2)
    path = write_format(frame, tmp_path, kind)
    run = base.run_step(
        experiment, dataset=str(path), text_column="text", label_column="y", test_fraction=0.2
    )
    rest, expected_test = stratified_split(frame, 0.2, 42)
    test = read_split(run.info.run_id, "test")
    assert test[TEXT_COLUMN].tolist() == expected_test[TEXT_COLUMN].tolist()
    assert run.data.metrics["train_rows"] + run.data.metrics["validation_rows"] == len(rest)
    assert run.data.params["test_source"] == f"test_fraction=0.2 of {path}"
    # Host data leaves its hashes in the lineage and a snapshot of the bytes read.
    assert run.data.tags["input.dataset"] == str(path)
    assert run.data.tags["input.dataset_sha256"]
    snapshot = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "dataset/files")}
    assert snapshot == {f"dataset/files/{path.name}"}
    assert [i.dataset.name for i in run.inputs.dataset_inputs] == ["train", "validation", "test"]


def test_directory_takes_train_and_held_out_files(tmp_path):
    base.write_cola_tsv(base.synthetic_frame(20, seed=3), tmp_path / "in_domain_train.tsv")
    base.write_cola_tsv(base.synthetic_frame(8, seed=4), tmp_path / "in_domain_dev.tsv")
    base.write_cola_tsv(base.synthetic_frame(9, seed=5), tmp_path / "out_of_domain_dev.tsv")
    (tmp_path / "README.md").write_text("not data")
    source = load_source(str(tmp_path))
    assert source.origin == {
        "train": str(tmp_path / "in_domain_train.tsv"),
        "test": str(tmp_path / "in_domain_dev.tsv"),
    }
    assert len(source.frames["test"]) == 8
    assert source.ignored == [str(tmp_path / "out_of_domain_dev.tsv")]


def test_directory_prefers_a_test_file_over_dev_and_validation(tmp_path):
    for name, seed in (("train.csv", 1), ("validation.csv", 2), ("test.csv", 3), ("dev.csv", 4)):
        write_format(base.synthetic_frame(10, seed), tmp_path, "csv").rename(tmp_path / name)
    assert load_source(str(tmp_path), CUSTOM).origin["test"] == str(tmp_path / "test.csv")


def test_a_folder_of_batches_is_read_together_each_file_keeping_its_rows(tmp_path):
    """Where new labelled batches land: every file is training data, except a held-out test file."""
    for name, seed in (("batch-2026-11-01.csv", 1), ("batch-2026-11-02.jsonl", 2), ("test.csv", 3)):
        write_format(base.synthetic_frame(10, seed), tmp_path, "csv").rename(tmp_path / name)
    (tmp_path / "batch-2026-11-02.jsonl").unlink()
    write_format(base.synthetic_frame(12, 2), tmp_path, "jsonl").rename(tmp_path / "batch-2026-11-02.jsonl")
    source = load_source(str(tmp_path), CUSTOM)
    assert [origin for origin, _ in source.parts["train"]] == [
        str(tmp_path / "batch-2026-11-01.csv"),
        str(tmp_path / "batch-2026-11-02.jsonl"),
    ]
    assert len(source.frames["train"]) == 22
    assert source.frames["train"]["row"].tolist() == list(range(1, 11)) + list(range(1, 13))
    assert source.manifest.kind == "directory" and len(source.manifest.files) == 3


def test_a_bad_row_in_one_batch_names_that_batch(tmp_path):
    write_format(base.synthetic_frame(10, 1), tmp_path, "csv").rename(tmp_path / "batch-1.csv")
    (tmp_path / "batch-2.csv").write_text("text,y,extra\ngood one,1,x\n   ,0,x\n")
    source = load_source(str(tmp_path), CUSTOM)
    report = ValidationReport()
    validate_parts(source.parts["train"], "train", report)
    assert [p.describe() for p in report.errors] == [
        f"{tmp_path / 'batch-2.csv'}, column text, row(s) 2: text is empty or whitespace only"
    ]


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["test.csv", "dev.csv"], "every file .* is named as held-out data"),
        (["train.csv", "x_test.csv", "y_test.csv"], "several held-out files"),
    ],
)
def test_ambiguous_directories_are_explained(tmp_path, names, message):
    for index, name in enumerate(names):
        write_format(base.synthetic_frame(10, index), tmp_path, "csv").rename(tmp_path / name)
    with pytest.raises(StepInputError, match=message):
        load_source(str(tmp_path), CUSTOM)


def test_a_path_inside_the_step_resolves_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for dataset in ("preprocess/data/cola/in_domain_dev.tsv", "data/cola/in_domain_dev.tsv"):
        source = load_source(dataset)
        assert len(source.frames["train"]) == 527
        assert source.lineage["train"] == "preprocess/data/cola/in_domain_dev.tsv"


def test_cola_sniffing_tells_a_header_from_a_bad_label(tmp_path):
    with_header = tmp_path / "header.tsv"
    with_header.write_text("source\tlabel\tmark\tsentence\ns\t1\t\tA fine one.\n")
    bad_label = base.write_tsv(tmp_path / "cola.tsv", [(1, "a b"), (0, "c d"), (7, "e f"), (1, "g h")])
    assert not is_cola_tsv(with_header)
    assert is_cola_tsv(bad_label)


def test_labels_are_ints_digit_strings_or_names_anything_else_is_a_bad_label():
    labels = [1, "0", " 1", 1.0, 0, True, "yes", 2, 0.5, None, "1.0"]
    frame = pd.DataFrame({TEXT_COLUMN: [f"sentence {i}" for i in range(len(labels))], LABEL_COLUMN: labels})
    report = ValidationReport()
    checked = validate_frame(frame, "train", "in.jsonl", report)
    (problem,) = report.errors
    assert problem.check == "bad_label"
    assert problem.rows == [6, 9, 10, 11]
    assert checked[LABEL_COLUMN].tolist()[:8] == [1, 0, 1, 1, 0, None, "yes", 2]
    # With the classes given (-P labels=0,1), a name or another number is a bad row too.
    report = ValidationReport()
    validate_frame(frame, "train", "in.jsonl", report, LabelSet.from_values([0, 1]))
    assert [p.rows for p in report.errors] == [[6, 9, 10, 11], [7, 8]]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "train.csv",
            b"text,y\nfine,1\nbad \xe9 byte,0\n",
            "train.csv: line 3 is not valid UTF-8 \\(byte 0xe9\\)",
        ),
        (
            "train.jsonl",
            b'{"text": "a", "y": 1}\n{"text": "\xff", "y": 0}\n',
            "train.jsonl: line 2 is not valid UTF-8",
        ),
        (
            "train.jsonl",
            b'{"text": "a", "y": 1}\n{"text": "b", y: 0}\n',
            "train.jsonl: line 2 is not valid JSON",
        ),
        ("train.txt", b"text\n", "train.txt: unsupported file type '.txt'"),
        ("train.csv", b"text,y\n\n", "train.csv has no data rows"),
        ("train.jsonl", b"\n", "train.jsonl has no data rows"),
        ("train.parquet", b"not parquet", "train.parquet is not a readable parquet file"),
    ],
)
def test_unreadable_files_name_file_and_line(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(StepInputError, match=message):
        load_source(str(tmp_path / name), CUSTOM)


@pytest.mark.parametrize(
    ("content", "overrides", "message"),
    [
        (
            b"text,y,extra\na b c,1,x\n",
            {},
            r"data.csv: no text column 'sentence'; columns found: \['text', 'y', 'extra'\]\. Set the "
            r"parameter text_column \(-P text_column=<column>\)",
        ),
        (
            b"text,y\na b c,1\n",
            {"text_column": "text", "label_column": "label"},
            r"data.csv: no label column 'label'; columns found: \['text', 'y'\]\. Set the parameter "
            r"label_column",
        ),
        (
            b"text,y\nfine,1\nbad \xff,0\n",
            {"text_column": "text", "label_column": "y"},
            r"data.csv: line 3 is not valid UTF-8",
        ),
        (
            b"text,y\na b,1\nc d,yes\ne f,0\ng h,0\ni j,1\n",
            {"text_column": "text", "label_column": "y"},
            r"data.csv, column y, row\(s\) 2: the label column mixes 4 number\(s\) \(e.g. 1, 0\) and 1 "
            r"name\(s\) \(e.g. 'yes'\)",
        ),
        (
            b"text,y\na b,1\nc d,1\ne f,0\ng h,0\n",
            {"text_column": "text", "label_column": "y"},
            r"data.csv, column y: class 0 has 2 row\(s\); 7 are needed to stratify it into train, "
            r"validation and test",
        ),
    ],
)
def test_step_on_bad_local_data_fails_and_logs_no_data(experiment, tmp_path, content, overrides, message):
    (tmp_path / "data.csv").write_bytes(content)
    base.assert_fails_without_data(experiment, message, dataset=str(tmp_path / "data.csv"), **overrides)


def test_overlap_drop_policy_removes_test_sentences_from_train(experiment, tmp_path):
    train, test = base.synthetic_frame(60, seed=6), base.synthetic_frame(20, seed=7)
    # Shared with the test file: exactly, and up to case and spacing (the backbone is uncased).
    train.loc[[0, 1, 2], TEXT_COLUMN] = [
        test.loc[0, TEXT_COLUMN],
        test.loc[1, TEXT_COLUMN].upper(),
        test.loc[2, TEXT_COLUMN] + "  ",
    ]
    write_format(train, tmp_path, "csv").rename(tmp_path / "train.csv")
    write_format(test, tmp_path, "csv").rename(tmp_path / "test.csv")
    columns = {"dataset": str(tmp_path), "text_column": "text", "label_column": "y"}

    kept = base.run_step(experiment, **columns)
    assert (
        kept.data.metrics["validation_overlap_test_train_rows"]
        + kept.data.metrics.get("validation_overlap_test_validation_rows", 0)
        == 3
    )
    assert kept.data.metrics["overlap_dropped_rows"] == 0

    dropped = base.run_step(experiment, overlap_policy="drop", **columns)
    assert dropped.data.metrics["overlap_dropped_rows"] == 3
    assert dropped.data.metrics["validation_overlap_dropped_rows"] == 3
    assert "validation_overlap_test_train_rows" not in dropped.data.metrics
    assert dropped.data.metrics["train_rows"] + dropped.data.metrics["validation_rows"] == 57
    learned = set(read_split(dropped.info.run_id, "train")[TEXT_COLUMN])
    assert test.loc[0, TEXT_COLUMN] not in learned


def test_hub_ids_parse_into_path_and_config():
    assert parse_hub_id("glue/cola") == ("glue", "cola")
    assert parse_hub_id("imdb") == ("imdb", None)
    assert parse_hub_id("nyu-mll/glue/cola") == ("nyu-mll/glue", "cola")
    assert parse_hub_id("stanfordnlp/sst2:") == ("stanfordnlp/sst2", None)


@pytest.mark.timed
@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"])
def test_hub_id_offline_fails_fast_naming_the_offline_options(monkeypatch, variable):
    for other in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(other, raising=False)
    monkeypatch.setenv(variable, "1")
    start = time.monotonic()
    with pytest.raises(StepInputError, match=rf"offline mode is set \({variable}=1\)\. Offline, use `cola`"):
        load_source("glue/cola")
    assert time.monotonic() - start < 2


@pytest.mark.timed
def test_unreachable_hub_fails_fast(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    start = time.monotonic()
    with pytest.raises(
        StepInputError, match=r"not reachable at http://127.0.0.1:9 .*a local file or directory"
    ):
        load_source("glue/cola")
    assert time.monotonic() - start < 6


def test_step_on_a_hub_id_offline_logs_no_data(experiment, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    base.assert_fails_without_data(experiment, "is read as a Hugging Face hub id", dataset="glue/cola")


def test_hub_data_set_holds_out_its_labelled_split(monkeypatch):
    def split(labels):
        return datasets.Dataset.from_dict(
            {
                "sentence": [f"s {i}" for i in range(len(labels))],
                "label": labels,
                "idx": list(range(len(labels))),
            }
        )

    loaded = datasets.DatasetDict(
        {"train": split([0, 1, 1, 0, 1]), "validation": split([1, 0, 1]), "test": split([-1, -1])}
    )
    monkeypatch.setattr(sources.hub, "offline_reason", lambda *_: None)
    monkeypatch.setattr(sources.hub.datasets, "load_dataset", lambda path, config: loaded)
    source = load_source("glue/cola")
    assert {name: len(frame) for name, frame in source.frames.items()} == {"train": 5, "test": 3}
    assert source.origin["test"] == "glue/cola (validation split)"
    lineage = source.lineage["test"]
    assert isinstance(lineage, HuggingFaceDatasetSource)
    assert (lineage.path, lineage.config_name, lineage.split) == ("glue", "cola", "validation")
    with pytest.raises(
        StepInputError, match=r"no text column 'text'; columns found: \['sentence', 'label', 'idx'\]"
    ):
        load_source("glue/cola", Columns("text", "label"))


def test_the_conductor_and_the_step_take_one_walk_to_the_data(tmp_path):
    """sentclf.dataset_snapshot.locate_dataset: on the host (the conductor, ops) and in the step's container
    (through the host-root mount) a relative path means the same file."""
    from sentclf.dataset_snapshot import locate_dataset

    repo = tmp_path / "repo"
    (repo / "preprocess" / "data").mkdir(parents=True)
    (repo / "labels").mkdir()
    (repo / "labels" / "batch.csv").write_text("sentence,label\n")
    (repo / "preprocess" / "data" / "x.csv").write_text("sentence,label\n")
    assert locate_dataset("labels/batch.csv", repo) == repo / "labels" / "batch.csv"
    assert locate_dataset("data/x.csv", repo) == repo / "preprocess" / "data" / "x.csv"
    assert locate_dataset(str(repo / "labels"), repo) == repo / "labels"
    for name in ("cola", "runs:/abc/dataset", "nyu-mll/glue", "missing.csv"):
        assert locate_dataset(name, repo) is None
    # In the container: the host's root under a mount, the step's directory mounted elsewhere.
    host_root, code = tmp_path / "host", tmp_path / "code"
    (host_root / repo.relative_to("/")).parent.mkdir(parents=True)
    (host_root / repo.relative_to("/")).symlink_to(repo)
    (code / "data").mkdir(parents=True)
    (code / "data" / "x.csv").write_text("sentence,label\n")
    mounted = host_root / repo.relative_to("/")
    assert locate_dataset("labels/batch.csv", repo, code, host_root) == mounted / "labels" / "batch.csv"
    assert locate_dataset("data/x.csv", repo, code, host_root) == code / "data" / "x.csv"
    (repo / "preprocess" / "data" / "x.csv").unlink()  # `preprocess/...` from the root: the mounted step's
    assert locate_dataset("preprocess/data/x.csv", repo, code, host_root) == code / "data" / "x.csv"
