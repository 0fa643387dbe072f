"""The benchmark scripts' own logic (their figures come from running them, not from tests), and their
layout: scripts over one shared module, benchlib, whose use_steps is the one sys.path edit."""

import ast
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest

from sentclf.contract import SERVED_VARIANT_TAG
from sentclf.schema import LABEL_COLUMN, TEXT_COLUMN
from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "bench"))

import heldout_file  # noqa: E402
import int8_gate  # noqa: E402
import pool_labels  # noqa: E402
import recipe_sweep  # noqa: E402
import self_training  # noqa: E402
import serving_profile  # noqa: E402
import train_throughput  # noqa: E402

import benchlib  # noqa: E402
import quantization  # noqa: E402
import serving  # noqa: E402

BENCH = REPO_ROOT / "bench"
SCRIPTS = sorted(path for path in BENCH.glob("*.py") if path.stem != "benchlib")


def imported_modules(tree: ast.AST) -> list[tuple[str, list[str]]]:
    """(module, names imported from it) for every import statement, at any depth."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.append((node.module or "", [alias.name for alias in node.names]))
    return found


def test_benches_are_scripts_over_benchlib_and_import_no_other_bench():
    assert len(SCRIPTS) >= 8
    scripts = {path.stem for path in SCRIPTS} | {"serving_peers"}
    for path in SCRIPTS:
        for module, names in imported_modules(ast.parse(path.read_text())):
            top = module.split(".")[0]
            assert top not in scripts, f"{path.name} imports the bench script {module}"
            private = [n for n in names if n.startswith("_")]
            assert not (top in ("benchlib", "sentclf") and private), f"{path.name}: {module} {private}"


@pytest.mark.parametrize(
    "path",
    sorted(p for p in BENCH.rglob("*.py") if p.name != "benchlib.py"),
    ids=lambda p: str(p.relative_to(BENCH)),
)
def test_no_bench_file_edits_sys_path(path):
    """Scripts find benchlib because bench/ is their own directory, sentclf because it is installed, a
    step's modules through benchlib.use_steps (read by tests/unit/test_architecture.py), the server
    package through benchlib.load_module; the peers through their PYTHONPATH."""
    tree = ast.parse(path.read_text())
    uses = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr == "path"
        and isinstance(node.value, ast.Name)
        and node.value.id == "sys"
    ]
    assert not uses, f"{path.name} touches sys.path on line(s) {uses}"


def test_recipe_sweep_types_the_mlproject_defaults():
    """YAML reads `2e-4` (no dot) as a string: an empty recipe must still train at a float rate."""
    defaults = recipe_sweep.mlproject_defaults(REPO_ROOT / "train" / "MLproject")
    recipe = recipe_sweep.parse_recipe("", defaults)
    assert isinstance(recipe["learning_rate"], float) and recipe["learning_rate"] > 0
    assert isinstance(recipe["tune_threshold"], bool)
    assert recipe_sweep.parse_recipe("lr=1e-4,seed=7", defaults)["learning_rate"] == pytest.approx(1e-4)


def test_recipe_sweep_rejects_an_unknown_key():
    defaults = recipe_sweep.mlproject_defaults(REPO_ROOT / "train" / "MLproject")
    with pytest.raises(SystemExit, match="unknown recipe key 'learning_rate'"):
        recipe_sweep.parse_recipe("learning_rate=1e-4", defaults)


def test_quantization_tunes_the_shift_that_maximises_mcc_and_keeps_none_when_none_helps():
    labels = np.array([0, 0, 0, 1, 1, 1])
    margins = np.array([-3.0, -2.0, 1.0, 1.5, 2.0, 3.0])  # the third row is wrong at shift 0
    logits = np.stack([np.zeros_like(margins), margins], axis=1)
    shift = quantization.tuned_shift(labels, logits)
    assert -1.5 < shift < -1.0
    assert quantization.mcc(labels, logits, shift) == pytest.approx(1.0)
    separable = np.stack([np.zeros(6), np.array([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0])], axis=1)
    assert quantization.tuned_shift(labels, separable) == 0.0


def _scores(val_mcc, val_tuned, tput, predictions):
    return {
        "size_mb": 1.0,
        "val_mcc": val_mcc,
        "test_mcc": 0.3,
        "val_mcc_tuned": val_tuned,
        "test_mcc_tuned": 0.3,
        "tput": tput,
        "val_predictions": predictions,
    }


def test_quantization_meets_the_target_only_within_001_both_ways_and_15x(capsys):
    labels = np.array([0, 1] * 20)
    same = labels.copy()
    scores = {
        "fp32": _scores(0.40, 0.40, 100.0, same),
        "fast_but_loses_when_retuned": _scores(0.395, 0.38, 200.0, same),
        "fast_but_loses_at_fp32s_threshold": _scores(0.38, 0.40, 200.0, same),
        "accurate_but_slow": _scores(0.40, 0.40, 140.0, same),
    }
    quantization.report(scores, [], labels)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert "meets_target=false" in last
    scores = {name: {k: v for k, v in s.items() if k in _scores(0, 0, 0, 0)} for name, s in scores.items()}
    scores["good"] = _scores(0.395, 0.392, 160.0, same)
    quantization.report(scores, [], labels)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("best=good ") and "meets_target=true" in last and "speedup=1.60" in last


def test_benchlib_lets_a_bench_import_a_steps_modules_by_their_bare_names(monkeypatch):
    import importlib

    import benchlib

    for name in ("validation", "splitting"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if not p.endswith("preprocess")])
    benchlib.use_steps("preprocess")
    benchlib.use_steps("preprocess")  # once on the path, however often named
    assert sys.path.count(str(REPO_ROOT / "preprocess")) == 1
    splitting = importlib.import_module("splitting")  # imports `validation` by bare name, as in the step
    assert splitting.__file__ == str(REPO_ROOT / "preprocess" / "splitting.py")
    assert sys.modules["validation"].__file__ == str(REPO_ROOT / "preprocess" / "validation.py")
    with pytest.raises(benchlib.BenchError, match="no step"):
        benchlib.use_steps("bench")


# /proc/cpuinfo (cut short) of a CPU with AVX2 and AVX-VNNI but no AVX-512, so no native bf16.
NO_BF16_CPUINFO = """processor\t: 0
model name\t: Intel(R) Core(TM) i7-12700H
flags\t\t: fpu sse2 avx avx2 fma avx_vnni sha_ni
processor\t: 1
model name\t: Intel(R) Core(TM) i7-12700H
flags\t\t: fpu sse2 avx avx2 fma avx_vnni sha_ni
"""
BF16_FLAGS = {"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}


def test_every_bench_figure_can_name_its_cpu_and_the_flags_it_depends_on():
    line = benchlib.cpu_summary(NO_BF16_CPUINFO, cores=2)
    assert line == "CPU Intel(R) Core(TM) i7-12700H, 2 cores; bf16 no, vnni yes (avx_vnni), avx2 yes"
    bf16 = benchlib.cpu_summary("model name: X\nflags: " + " ".join(sorted(BF16_FLAGS)), cores=4)
    assert bf16.endswith("bf16 yes (avx512_bf16), vnni yes (avx512_vnni), avx2 yes")
    assert benchlib.cpu_summary("") == f"CPU unknown, {benchlib.CORES} cores; bf16 no, vnni no, avx2 no"


def test_without_native_bf16_the_training_bench_compares_fp32_with_the_trainers_fp32():
    flags = set(NO_BF16_CPUINFO.split("flags\t\t: ")[1].split("\n")[0].split())
    assert [name for name, _, _ in train_throughput.plan(flags)] == ["ours fp32", "trainer fp32"]
    assert train_throughput.plan(flags) == [
        ("ours fp32", "ours", "fp32"),
        ("trainer fp32", "trainer", "fp32"),
    ]
    speed = {"ours fp32": 150.0, "trainer fp32": 100.0}
    assert train_throughput.result_line(False, speed, None) == "native_bf16=false fp32_over_trainer=1.50"


def test_with_native_bf16_it_keeps_the_bf16_comparisons_and_adds_the_fp32_one():
    runs = train_throughput.plan(BF16_FLAGS)
    assert [name for name, _, _ in runs] == ["ours fp32", "ours bf16", "trainer fp32", "trainer bf16"]
    assert train_throughput.plan({"amx_bf16"})[1] == ("ours bf16", "ours", "bf16")
    assert len(train_throughput.plan(BF16_FLAGS, fp32_only=True)) == 2
    speed = {"ours fp32": 150.0, "ours bf16": 210.0, "trainer fp32": 100.0, "trainer bf16": 120.0}
    line = train_throughput.result_line(True, speed, (0.01, -0.02, 0.04))
    assert line == (
        "native_bf16=true fp32_over_trainer=1.50 bf16_over_fp32=1.40 bf16_over_trainer_bf16=1.75 "
        "delta_mcc=0.0100 delta_mcc_low=-0.0200 delta_mcc_high=0.0400"
    )


def test_a_txt_file_of_a_tasks_own_texts_is_a_load_of_its_non_blank_lines_in_a_seeded_order(tmp_path):
    texts = tmp_path / "messages.txt"
    texts.write_text(
        "Free entry: text WIN now\n\n  \nAre we still on for lunch?\nCall me back\n", encoding="utf-8"
    )
    load = benchlib.load_sentences(texts, seed=3)
    assert sorted(load) == ["Are we still on for lunch?", "Call me back", "Free entry: text WIN now"]
    assert load == benchlib.load_sentences(texts, seed=3)


def test_the_int8_ratios_are_printed_only_when_the_fp32_twin_was_served():
    def result(name, c16, c64):
        contender = serving.ContenderResult(name, 0, 0.0, "64/64", 0.1, None)
        for concurrency, throughput in ((16, c16), (64, c64)):  # so many requests in one second
            contender.levels[concurrency] = serving.loadgen.Level(
                concurrency, [0.01] * throughput, wall_s=1.0
            )
        return contender

    ours, twin = result("ours", 300, 330), result("ours-fp32", 150, 200)
    assert (
        serving.int8_ratios([ours, twin], "ours", 16, 64)
        == " int8_ratio_vs_fp32=2.00 int8_ratio_vs_fp32_c64=1.65"
    )
    assert serving.int8_ratios([ours], "ours", 16, 64) == ""


def test_a_bench_starts_an_int8_version_from_the_fp32_model_its_run_kept_and_an_fp32_one_from_its_own(
    tracking_store, tmp_path
):
    client = mlflow.MlflowClient()
    client.create_registered_model("spam")
    for served in ("int8", "fp32"):
        with mlflow.start_run() as run:
            mlflow.set_tag(SERVED_VARIANT_TAG, served)
            twin = tmp_path / served / "model.onnx"
            twin.parent.mkdir()
            twin.write_bytes(b"the fp32 twin")
            mlflow.log_artifact(str(twin), "onnx_variants")
        client.create_model_version("spam", f"runs:/{run.info.run_id}/model", run.info.run_id)
    int8_twin = benchlib.fp32_twin("spam", "1", tmp_path / "int8-version")
    assert int8_twin is not None and int8_twin.read_bytes() == b"the fp32 twin"
    assert benchlib.fp32_twin("spam", "2", tmp_path / "fp32-version") is None


def test_the_fp32_twin_is_served_in_place_of_the_images_model_by_both_benches(tmp_path):
    twin = tmp_path / "fp32" / "model.onnx"
    assert benchlib.model_volume(None) is None
    assert benchlib.model_volume(twin) == {str(twin): {"bind": "/models/model/model.onnx", "mode": "ro"}}
    assert serving_profile.parse_args(["--against-fp32", "--parts", "load"]).against_fp32
    assert not serving_profile.parse_args([]).against_fp32


def test_a_held_out_file_is_read_as_cola_or_by_its_named_columns_and_its_labels_as_class_numbers(tmp_path):
    texts, labels = heldout_file.read_file(
        REPO_ROOT / "preprocess" / "data" / "cola-out-of-domain" / "out_of_domain_dev.tsv", None, None
    )
    assert len(texts) == len(labels) == 516 and set(labels) == {"0", "1"}
    assert texts[0] == "Somebody just left - guess who."
    (tmp_path / "own.csv").write_text("message,topic\nhello there,ham\nwin cash now,spam\n")
    assert heldout_file.read_file(tmp_path / "own.csv", "message", "topic") == (
        ["hello there", "win cash now"],
        ["ham", "spam"],
    )
    with pytest.raises(SystemExit, match="no column.*'text'.*--text-column"):
        heldout_file.read_file(tmp_path / "own.csv", "text", "topic")
    names = ["ham", "spam"]
    assert heldout_file.class_numbers(["spam", "ham", "1"], names).tolist() == [1, 0, 1]
    with pytest.raises(SystemExit, match=r"labels \['eggs'\] are neither class names"):
        heldout_file.class_numbers(["eggs"], names)


def test_the_int8_pages_bench_commands_parse_as_printed():
    page = (REPO_ROOT / "docs" / "int8.md").read_text()
    gate = "python bench/int8_gate.py --model-name <name> --model-version <n>"
    assert gate in page
    args = int8_gate.parse_args(gate.replace("<name>", "spam-classifier").replace("<n>", "1").split()[2:])
    assert (args.model_name, args.model_version, args.keep_fp32) == ("spam-classifier", "1", 1)
    assert int8_gate.parse_args(["--keep-fp32", "0", "--save-int8", "m.onnx"]).save_int8.name == "m.onnx"
    served = "python bench/serving.py --server-image <name>-server:<tag>\n--against-fp32"
    assert served in page
    args = serving.parse_args(
        ["--server-image", "spam-server:1-abc", "--against-fp32", "--sentences", "t.txt"]
    )
    assert args.against_fp32 and args.sentences.suffix == ".txt"


def test_self_training_holds_one_labelled_row_per_class_out_and_labels_the_pool_by_argmax(tmp_path):
    (tmp_path / "data").mkdir()
    rows = [(f"question {i}", label) for i, label in enumerate(["HUM", "LOC", "NUM"] * 3)]
    frame = pd.DataFrame(rows, columns=["question", "answer_type"])
    frame.to_csv(tmp_path / "data" / "train.csv", index=False)
    frame.head(3).to_csv(tmp_path / "data" / "test.csv", index=False)
    frames = benchlib.labelled_frames(tmp_path, "question", "answer_type", seed=0)
    assert sorted(frames["validation"][LABEL_COLUMN]) == [0, 1, 2]
    assert len(frames["train"]) == 6 and sorted(frames["train"][LABEL_COLUMN]) == [0, 0, 1, 1, 2, 2]
    assert not set(frames["train"][TEXT_COLUMN]) & set(frames["validation"][TEXT_COLUMN])
    assert list(frames["test"][LABEL_COLUMN]) == [0, 1, 2]  # sorted label names, as the train rows'
    labelled = self_training.EncodedSplit([[1, 2]], np.array([2]), ["a"])
    pool = self_training.EncodedSplit([[3], [4, 5]], np.zeros(2, np.int64), ["b", "c"])
    joined = self_training.pseudo_labelled(labelled, pool, np.array([[0.1, 0.9, 0.0], [2.0, 0.0, 1.0]]))
    assert joined.texts == ["a", "b", "c"] and list(joined.labels) == [2, 1, 0]


def test_pool_labels_reads_each_pool_text_with_its_held_back_class(tmp_path):
    (tmp_path / "pool.txt").write_text("Who wrote it ?\n\nWhere is Rome ?\n")
    held_back = pd.DataFrame(
        {"question": ["Where is Rome ?", "Who wrote it ?"], "answer_type": ["LOC", "HUM"]}
    )
    held_back.to_csv(tmp_path / "pool-labels.csv", index=False)
    texts, classes = pool_labels.pool_with_labels(tmp_path, "question", "answer_type", ["HUM", "LOC"])
    assert texts == ["Who wrote it ?", "Where is Rome ?"] and list(classes) == [0, 1]
