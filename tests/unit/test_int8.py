"""int8 that keeps its accuracy (train/int8.py): the calibration rows, the MatMuls kept in fp32, the rule
that serves int8 or fp32 (both ways, any label set), what the run records, and a tiny train run that asks
for int8 and serves what the rule chose."""

import mlflow
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from sentclf.contract import INT8_DECISION_TAG, SERVED_VARIANT_TAG, STEP_TAG
from tests.unit.test_train import data_run, train_args  # noqa: F401 (a fixture)

import int8
import train

HIDDEN, INNER = 8, 16


def tiny_encoder(path, layers: int = 2) -> list[str]:
    """A graph of the exported model's shape, small: per layer a weight MatMul, a GELU (Erf, Mul, Mul)
    and the feed-forward output MatMul; mean over tokens, a Gemm head. The feed-forward outputs' names."""
    rng = np.random.default_rng(0)
    nodes, weights, ffn_outputs = [], [], []
    x = "embedded"
    nodes.append(helper.make_node("Gather", ["embeddings", "input_ids"], [x], name="embed"))
    weights.append(numpy_helper.from_array(rng.normal(size=(50, HIDDEN)).astype(np.float32), "embeddings"))
    for layer in range(layers):
        w1, w2 = f"w1_{layer}", f"w2_{layer}"
        weights += [
            numpy_helper.from_array(rng.normal(size=(HIDDEN, INNER)).astype(np.float32) / 3, w1),
            numpy_helper.from_array(rng.normal(size=(INNER, HIDDEN)).astype(np.float32) / 4, w2),
        ]
        p = f"l{layer}_"
        nodes += [
            helper.make_node("MatMul", [x, w1], [p + "inner"], name=p + "intermediate/MatMul"),
            helper.make_node("Div", [p + "inner", "sqrt2"], [p + "scaled"], name=p + "div"),
            helper.make_node("Erf", [p + "scaled"], [p + "erf"], name=p + "erf"),
            helper.make_node("Add", [p + "erf", "one"], [p + "erf1"], name=p + "add"),
            helper.make_node("Mul", [p + "inner", p + "erf1"], [p + "gelu2"], name=p + "mul"),
            helper.make_node("Mul", [p + "gelu2", "half"], [p + "gelu"], name=p + "mul_half"),
            helper.make_node("MatMul", [p + "gelu", w2], [p + "out"], name=p + "output/MatMul"),
        ]
        ffn_outputs.append(p + "output/MatMul")
        x = p + "out"
    nodes += [
        helper.make_node("ReduceMean", [x], ["pooled"], name="pool", axes=[1], keepdims=0),
        helper.make_node("Gemm", ["pooled", "head_w", "head_b"], ["logits"], name="classifier/Gemm"),
    ]
    weights += [
        numpy_helper.from_array(rng.normal(size=(HIDDEN, 2)).astype(np.float32), "head_w"),
        numpy_helper.from_array(np.zeros(2, np.float32), "head_b"),
        numpy_helper.from_array(np.array(2**0.5, np.float32), "sqrt2"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
    ]
    inputs = [
        helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"])
        for name in ("input_ids", "attention_mask", "token_type_ids")
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        inputs,
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return ffn_outputs


ROWS = [[1, 5, 7], [1, 9, 2, 4, 3], [1, 8], [1, 3, 3, 3], [1, 2, 6, 7, 8, 9]]


def test_calibration_feeds_seeded_training_rows_one_at_a_time_unpadded():
    reader = int8.TrainingRows(ROWS, rows=3, seed=1)
    feeds = list(iter(reader.get_next, None))
    assert len(feeds) == len(reader) == 3
    for feed in feeds:
        assert set(feed) == {"input_ids", "attention_mask", "token_type_ids"}
        assert feed["input_ids"].shape[0] == 1 and feed["input_ids"].dtype == np.int64
        assert feed["attention_mask"].all() and not feed["token_type_ids"].any()  # no padded position
        assert feed["input_ids"][0].tolist() in ROWS
    again = [f["input_ids"][0].tolist() for f in iter(int8.TrainingRows(ROWS, rows=3, seed=1).get_next, None)]
    assert again == [f["input_ids"][0].tolist() for f in feeds]  # seeded
    reader.rewind()  # each int8 model is calibrated on the same rows
    assert [f["input_ids"][0].tolist() for f in iter(reader.get_next, None)] == again
    assert len(int8.TrainingRows(ROWS, rows=100)) == len(ROWS)  # never more rows than there are
    with pytest.raises(ValueError, match="at least one training row"):
        int8.TrainingRows([])


def test_the_feed_forward_outputs_are_found_and_the_first_is_kept_fp32(tmp_path):
    ffn_outputs = tiny_encoder(tmp_path / "m.onnx", layers=3)
    model = onnx.load(str(tmp_path / "m.onnx"))
    assert int8.weight_matmuls(model) == [
        name for layer in range(3) for name in (f"l{layer}_intermediate/MatMul", f"l{layer}_output/MatMul")
    ]
    assert int8.ffn_output_matmuls(model) == ffn_outputs
    assert int8.keep_fp32(model) == ffn_outputs[: int8.KEEP_FP32_FFN_OUTPUTS] == ["l0_output/MatMul"]
    assert int8.keep_fp32(model, ffn_outputs=2) == ffn_outputs[:2]


def test_quantize_int8_keeps_the_excluded_matmul_and_the_head_fp32(tmp_path):
    tiny_encoder(tmp_path / "m.onnx")
    out, kept = int8.quantize_int8(tmp_path / "m.onnx", tmp_path / "q.onnx", int8.TrainingRows(ROWS))
    assert kept == ["l0_output/MatMul"]
    model = onnx.load(str(out))
    dequantized = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    matmuls = {n.name: n for n in model.graph.node if n.op_type in ("MatMul", "Gemm")}
    # Quantised: both inputs come through a DequantizeLinear (QDQ); kept: neither.
    assert set(matmuls["l0_intermediate/MatMul"].input) <= dequantized
    assert set(matmuls["l1_output/MatMul"].input) <= dequantized
    assert not set(matmuls["l0_output/MatMul"].input) & dequantized
    assert not set(matmuls["classifier/Gemm"].input) & dequantized
    feed = int8.TrainingRows.feed(ROWS[1])
    fp32 = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, feed)[0]
    quantized = ort.InferenceSession(str(out)).run(None, feed)[0]
    assert np.abs(quantized - fp32).max() < 0.1 * np.abs(fp32).max()  # close, not equal
    assert not np.array_equal(quantized, fp32)


def predictions(rows: int = 400, classes: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, rows)
    fp32 = np.where(rng.random(rows) < 0.8, labels, rng.integers(0, classes, rows))  # a decent model
    return labels, fp32


@pytest.mark.parametrize("classes", [2, 5])
def test_int8_that_agrees_with_fp32_is_served(classes):
    labels, fp32 = predictions(classes=classes)
    decision = int8.decide(labels, fp32, fp32.copy(), classes, max_mcc_loss=0.01, resamples=500)
    assert decision.served == int8.INT8
    assert decision.comparison.delta_mcc.low == decision.comparison.delta_mcc.high == 0.0
    assert decision.agreement == 1.0
    assert decision.reason.startswith("int8 served:") and "within the allowed 0.0100 MCC" in decision.reason


@pytest.mark.parametrize("classes", [2, 5])
def test_int8_that_may_lose_more_than_allowed_is_not_served_and_says_why(classes):
    labels, fp32 = predictions(classes=classes)
    worse = fp32.copy()
    flip = np.flatnonzero(worse == labels)[:30]  # 30 right answers made wrong
    worse[flip] = (labels[flip] + 1) % classes
    decision = int8.decide(labels, fp32, worse, classes, max_mcc_loss=0.01, resamples=500)
    assert decision.served == int8.FP32
    assert decision.comparison.delta_mcc.high < 0
    assert decision.reason.startswith("fp32 served:")
    assert "more than the allowed 0.0100 (int8_max_mcc_loss)" in decision.reason
    # The same comparison under a looser allowance serves int8: the parameter decides, not the figures.
    loose = int8.decide(labels, fp32, worse, classes, max_mcc_loss=0.5, resamples=500)
    assert loose.served == int8.INT8 and loose.comparison == decision.comparison


def flipped(labels: np.ndarray, fp32: np.ndarray, rows: int, classes: int = 2) -> np.ndarray:
    """fp32's answers with `rows` right ones made wrong."""
    worse = fp32.copy()
    flip = np.flatnonzero(worse == labels)[:rows]
    worse[flip] = (labels[flip] + 1) % classes
    return worse


SPEEDS = {"int8_all": 500.0, int8.INT8: 450.0, int8.DYNAMIC: 400.0}  # sentences/s, as on an AMD EPYC


def test_validation_picks_the_fastest_int8_model_here_unless_another_scores_higher_there():
    tie = {"int8_all": 0.0, int8.INT8: 0.0, int8.DYNAMIC: 0.0}
    assert int8.pick_on_validation(tie, SPEEDS)[0] == "int8_all"  # a tie: the fastest
    # Where dynamic int8 is the fastest (an Intel CPU with VNNI), it is picked.
    assert int8.pick_on_validation(tie, SPEEDS | {int8.DYNAMIC: 680.0})[0] == int8.DYNAMIC
    better = {"int8_all": 0.01, int8.INT8: -0.02, int8.DYNAMIC: 0.0}
    assert int8.pick_on_validation(better, SPEEDS | {int8.DYNAMIC: 680.0})[0] == "int8_all"
    name, picked = int8.pick_on_validation({"int8_all": -0.0209, int8.INT8: 0.0, int8.DYNAMIC: -0.01}, SPEEDS)
    assert name == int8.INT8
    assert picked == (
        "the first feed-forward output in fp32, picked on validation (MCC minus fp32's, sentences/s here: "
        "every weight MatMul in int8 -0.0209 at 500/s, the first feed-forward output in fp32 +0.0000 at "
        "450/s, dynamic int8 -0.0100 at 400/s)"
    )


def test_dynamic_int8_quantises_every_weight_matmul_without_calibration(tmp_path):
    tiny_encoder(tmp_path / "m.onnx")
    out = int8.quantize_dynamic_int8(tmp_path / "m.onnx", tmp_path / "q.onnx")
    nodes = onnx.load(str(out)).graph.node
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= {n.op_type for n in nodes}
    assert not any(n.op_type == "MatMul" for n in nodes)  # every weight MatMul quantised
    assert not any(n.op_type == "QuantizeLinear" for n in nodes)  # no calibrated ranges
    feed = int8.TrainingRows.feed(ROWS[1])
    fp32 = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, feed)[0]
    quantized = ort.InferenceSession(str(out)).run(None, feed)[0]
    assert np.abs(quantized - fp32).max() < 0.1 * np.abs(fp32).max()  # close, not equal
    assert not np.array_equal(quantized, fp32)


def test_the_test_rows_judge_the_picked_model_alone_and_the_line_says_which():
    labels, fp32 = predictions()
    _, picked = int8.pick_on_validation({"int8_all": 0.0, int8.INT8: 0.0}, SPEEDS)
    decision = int8.decide(labels, fp32, fp32.copy(), 2, resamples=500, candidate="int8_all", picked=picked)
    assert (decision.served, decision.served_variant) == (int8.INT8, "int8_all")
    assert decision.reason.startswith("int8 served: every weight MatMul in int8, picked on validation")
    assert "(95%, 500 paired resamples" in decision.reason
    refused = int8.decide(labels, fp32, flipped(labels, fp32, 30), 2, candidate="int8_all", picked=picked)
    assert (refused.served, refused.served_variant) == (int8.FP32, "fp32")
    assert refused.reason.startswith("fp32 served: every weight MatMul in int8, picked on validation")


def test_the_decision_is_recorded_as_metrics_and_a_tag(tracking_store):
    labels, fp32 = predictions()
    decision = int8.decide(labels, fp32, fp32.copy(), 2, resamples=200)
    with mlflow.start_run() as run:
        int8.record(decision)
    recorded = mlflow.get_run(run.info.run_id).data
    assert recorded.metrics["int8_served"] == 1.0
    assert recorded.metrics["int8_max_mcc_loss"] == int8.DEFAULT_MAX_MCC_LOSS
    assert recorded.metrics["int8_test_label_agreement"] == 1.0
    for key in ("int8_test_mcc_delta", "int8_test_mcc_delta_low", "int8_test_mcc_delta_high"):
        assert recorded.metrics[key] == 0.0
    assert recorded.tags[INT8_DECISION_TAG] == decision.reason


def test_a_bad_allowance_fails_before_heavy_work(tracking_store):
    with pytest.raises(SystemExit, match=r"int8_max_mcc_loss must be in \[0, 1\)"):
        train.main([*train_args(), "--registered-model-name", "m", "--int8-max-mcc-loss", "-0.1"])


def test_a_run_that_asks_for_int8_serves_what_the_rule_chose(data_run, tracking_store):  # noqa: F811
    train.main([*train_args(serve_variant="int8"), "--registered-model-name", "tiny-int8"])
    run = mlflow.search_runs(
        experiment_ids=[tracking_store], filter_string=f"tags.`{STEP_TAG}` = 'train'", output_format="list"
    )[0]
    served = run.data.tags[SERVED_VARIANT_TAG]
    assert served == ("int8" if run.data.metrics["int8_served"] == 1.0 else "fp32")
    assert run.data.tags[INT8_DECISION_TAG].startswith(f"{served} served:")
    assert run.data.metrics["int8_max_mcc_loss"] == int8.DEFAULT_MAX_MCC_LOSS
    # Static int8 quantises the MatMuls' weights (the token table stays fp32): about 2/3 of fp32's size.
    assert run.data.metrics["variant_int8_size_mb"] < run.data.metrics["variant_fp32_size_mb"] * 0.8
    assert run.data.metrics["variant_int8_all_size_mb"] < run.data.metrics["variant_int8_size_mb"]
    # The registered model is the chosen variant; the other is kept beside it.
    model_dir = mlflow.artifacts.download_artifacts("models:/tiny-int8@challenger")
    graph = onnx.load(f"{model_dir}/artifacts/model.onnx", load_external_data=False).graph
    assert any(n.op_type == "DequantizeLinear" for n in graph.node) == (served == "int8")
    # Every variant built but the one served is kept beside it (both int8 models were built).
    metrics = run.data.metrics
    file = {0: "int8_all", 1: "int8"}.get(metrics["int8_fp32_ffn_outputs"])
    file = "fp32" if served == "fp32" else (int8.DYNAMIC if metrics["int8_dynamic"] else file)
    built = {"model.onnx", "model.optimized.onnx", "model.int8.onnx", "model.int8_all.onnx"}
    built.add("model.int8_dynamic.onnx")
    # Each variant's speed here: what picks the fastest of the int8 models that score as well.
    assert all(metrics[f"variant_{name}_sentences_per_s"] > 0 for name in (*int8.CANDIDATES, "fp32"))
    kept = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "onnx_variants")}
    served_file = "model.onnx" if file == "fp32" else f"model.{file}.onnx"
    assert kept == {f"onnx_variants/{name}" for name in built - {served_file}}


def test_the_model_card_says_which_variant_is_served_and_why(tracking_store):
    from tests.unit.test_model_card import card

    reason = "fp32 served: int8 - fp32 test MCC -0.0300 [-0.0700, +0.0100] (...); int8 may lose up to 0.0700"
    recipe = card(**{SERVED_VARIANT_TAG: "fp32", INT8_DECISION_TAG: reason}).split("## Recipe")[1]
    assert "- served variant: `fp32`" in recipe
    assert f"- int8 decision: {reason}" in recipe
    plain = card(**{SERVED_VARIANT_TAG: "optimized"}).split("## Recipe")[1]
    assert "- served variant: `optimized`" in plain and "int8 decision" not in plain
    assert "served variant" not in card()  # a train run from before the tag
