"""int8 that keeps its accuracy, or is not served: static quantisation of the exported model, and the rule
that decides whether the `int8` variant or fp32 is the model the run logs and serves.

How the int8 model is made (ONNX Runtime's quantisation tools): `quant_pre_process` (shape inference,
constant folding), then `quantize_static` in QDQ format with int8 weights per output channel and uint8
activations whose ranges are calibrated (MinMax) on training rows, fed one row at a time so that no padded
position widens a range. Only weight MatMuls are quantised (the attention's activation-by-activation
products, Softmax, LayerNorm, GELU and the classification head, a Gemm, stay fp32), and the MatMuls that
hurt most can be kept fp32 as well: measured on CoLA's default model (docs/benchmarks.md, "int8 that keeps
its accuracy"), the feed-forward output MatMul (the one that reads the GELU's output) of the first encoder
layer alone moved the logits most. Three int8 models are made (`CANDIDATES`): static with every weight
MatMul in int8, static with that first feed-forward output kept fp32, and dynamic (`quantize_dynamic`:
per-channel int8 weights, each activation's range taken per call, no calibration). Which is fastest
depends on the CPU (ONNX Runtime's QDQ kernels won on an AMD EPYC, its dynamic MatMulInteger on an Intel
Xeon with VNNI: docs/benchmarks.md), so their speed is measured where the step runs (variants.py).
Validation picks one: the fastest whose validation MCC is as high as the best of them.

Whether it is served: the picked int8 model and fp32 score the same test rows; a paired bootstrap
(sentclf.bootstrap, the gate's maths) gives the 95% interval of int8's MCC minus fp32's (multi-class MCC
for more than two classes, so any label set). int8 is served only when the whole interval lies above
`-max_mcc_loss`; otherwise the run logs why, tags it, and serves fp32. Validation picks and the test rows
judge a single model, so the rule's 95% is not spent on a choice among several. The figures and the choice
are on the train run (metrics `int8_*`, tags SERVED_VARIANT_TAG, set by train.py, and INT8_DECISION_TAG),
and the model card repeats both tags.
"""

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from sentclf.bootstrap import PairedComparison, paired_bootstrap, resample_indices
from sentclf.contract import INT8_DECISION_TAG

logger = logging.getLogger(__name__)

INT8, FP32 = "int8", "fp32"
DEFAULT_MAX_MCC_LOSS = 0.01
CALIBRATION_ROWS = 256
# The first N feed-forward output MatMuls (graph order) kept in fp32: the safer of the two int8 models.
KEEP_FP32_FFN_OUTPUTS = 1
DYNAMIC = "int8_dynamic"
# The int8 models tried: variant name -> feed-forward outputs kept fp32 (the dynamic one keeps none), and
# what each is.
CANDIDATES = {"int8_all": 0, INT8: KEEP_FP32_FFN_OUTPUTS, DYNAMIC: 0}
DESCRIPTIONS = {
    "int8_all": "every weight MatMul in int8",
    INT8: "the first feed-forward output in fp32",
    DYNAMIC: "dynamic int8",
}
RESAMPLES = 2000
# The ops whose output, a few nodes up, marks a MatMul as a feed-forward output (it reads the activation).
ACTIVATION_OPS = {"Erf", "Gelu", "FastGelu", "BiasGelu", "Tanh", "Relu"}


class TrainingRows(CalibrationDataReader):
    """A seeded sample of training rows, one row per feed (no padding): what the activation ranges are
    calibrated on. Never validation or test rows, so both stay honest."""

    def __init__(self, input_ids: list[list[int]], rows: int = CALIBRATION_ROWS, seed: int = 0) -> None:
        if not input_ids:
            raise ValueError("calibration needs at least one training row")
        chosen = np.random.default_rng(seed).permutation(len(input_ids))[:rows]
        self.rows = [input_ids[i] for i in sorted(chosen)]
        self.rewind()

    def rewind(self) -> None:
        """From the first row again: each int8 model is calibrated on the same rows."""
        self._feeds: Iterator[dict[str, np.ndarray]] = (self.feed(ids) for ids in self.rows)

    @staticmethod
    def feed(ids: list[int]) -> dict[str, np.ndarray]:
        row = np.asarray([ids], dtype=np.int64)
        return {"input_ids": row, "attention_mask": np.ones_like(row), "token_type_ids": np.zeros_like(row)}

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)

    def __len__(self) -> int:
        return len(self.rows)


def weight_matmuls(model: onnx.ModelProto) -> list[str]:
    """MatMul nodes whose second operand is a constant (a weight), in graph order: the quantised ones."""
    constants = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in constants]


def ffn_output_matmuls(model: onnx.ModelProto) -> list[str]:
    """Weight MatMuls that read an activation function's output (GELU: Erf, Mul, Mul), in graph order."""
    producer = {output: node for node in model.graph.node for output in node.output}

    def reads_activation(tensor: str, depth: int = 3) -> bool:
        node = producer.get(tensor)
        if node is None or node.op_type == "MatMul":  # not through another layer
            return False
        if node.op_type in ACTIVATION_OPS:
            return True
        return depth > 0 and any(reads_activation(i, depth - 1) for i in node.input)

    weights = set(weight_matmuls(model))
    return [n.name for n in model.graph.node if n.name in weights and reads_activation(n.input[0])]


def keep_fp32(model: onnx.ModelProto, ffn_outputs: int = KEEP_FP32_FFN_OUTPUTS) -> list[str]:
    """The weight MatMuls left in fp32: the first `ffn_outputs` feed-forward outputs."""
    return ffn_output_matmuls(model)[:ffn_outputs]


@contextlib.contextmanager
def preprocessed(fp32_path: Path) -> Iterator[Path]:
    """`quant_pre_process`'s copy of the model (shape inference, constant folding), in a temporary working
    directory: ORT's shape inference and quantisers drop temporary models in the working directory."""
    with tempfile.TemporaryDirectory(prefix="sentclf-int8-") as tmp, contextlib.chdir(tmp):
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        yield prepared


def quantize_int8(
    fp32_path: Path, out_path: Path, calibration: TrainingRows, ffn_outputs: int = KEEP_FP32_FFN_OUTPUTS
) -> tuple[Path, list[str]]:
    """The static int8 model of `fp32_path` at `out_path`, and the MatMuls it keeps in fp32 (the first
    `ffn_outputs` feed-forward outputs)."""
    calibration.rewind()
    with preprocessed(fp32_path) as prepared:
        excluded = keep_fp32(onnx.load(str(prepared), load_external_data=False), ffn_outputs)
        quantize_static(
            str(prepared),
            str(out_path),
            calibration,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=excluded,
            extra_options={"MatMulConstBOnly": True, "WeightSymmetric": True, "ActivationSymmetric": False},
        )
    logger.info(
        "int8: static QDQ, per-channel weights, ranges from %d training rows; kept fp32: %s",
        len(calibration),
        ", ".join(excluded) or "none",
    )
    return out_path, excluded


def quantize_dynamic_int8(fp32_path: Path, out_path: Path) -> Path:
    """The dynamic int8 model of `fp32_path` at `out_path`: every weight MatMul with per-channel int8
    weights, its input quantised with the range of each call (no calibration rows)."""
    with preprocessed(fp32_path) as prepared:
        quantize_dynamic(
            str(prepared),
            str(out_path),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
            extra_options={"MatMulConstBOnly": True},
        )
    logger.info("int8: dynamic, per-channel weights")
    return out_path


def pick_on_validation(val_mcc_deltas: dict[str, float], speeds: dict[str, float]) -> tuple[str, str]:
    """The int8 model the test rows will judge: the fastest (`speeds`: sentences/s measured here) whose
    validation MCC minus fp32's is as high as the best of them; and a phrase for the decision line that
    says so."""
    best = max(val_mcc_deltas.values())
    name = max((n for n, delta in val_mcc_deltas.items() if delta >= best), key=lambda n: speeds[n])
    figures = ", ".join(
        f"{DESCRIPTIONS.get(n, n)} {delta:+.4f} at {speeds[n]:.0f}/s" for n, delta in val_mcc_deltas.items()
    )
    picked = f"{DESCRIPTIONS.get(name, name)}, picked on validation"
    return name, f"{picked} (MCC minus fp32's, sentences/s here: {figures})"


@dataclass(frozen=True)
class Int8Decision:
    """An int8 model against fp32 on the same test rows, and the variant that follows."""

    served: str  # INT8 or FP32
    comparison: PairedComparison  # int8 minus fp32
    max_mcc_loss: float
    agreement: float  # share of test rows on which both predict the same class
    rows: int
    candidate: str = INT8  # the int8 variant judged (a key of CANDIDATES)
    picked: str = ""  # how validation picked it, when there was a choice

    @property
    def served_variant(self) -> str:
        """The variant whose file is logged, registered and served."""
        return self.candidate if self.served == INT8 else FP32

    @property
    def reason(self) -> str:
        """One line, for the log, the tag and the model card."""
        delta = self.comparison.delta_mcc
        figures = (
            f"int8 - fp32 test MCC {delta.value:+.4f} [{delta.low:+.4f}, {delta.high:+.4f}] (95%, "
            f"{self.comparison.resamples} paired resamples of {self.rows} test rows, label agreement "
            f"{self.agreement:.2%})"
        )
        if self.picked:
            figures = f"{self.picked}: {figures}"
        if self.served == INT8:
            return f"int8 served: {figures}; the loss is within the allowed {self.max_mcc_loss:.4f} MCC"
        return (
            f"fp32 served: {figures}; int8 may lose up to {-delta.low:.4f} MCC, more than the allowed "
            f"{self.max_mcc_loss:.4f} (int8_max_mcc_loss)"
        )


def decide(
    labels: np.ndarray,
    fp32_predictions: np.ndarray,
    int8_predictions: np.ndarray,
    num_classes: int,
    max_mcc_loss: float = DEFAULT_MAX_MCC_LOSS,
    resamples: int = RESAMPLES,
    seed: int = 0,
    candidate: str = INT8,
    picked: str = "",
) -> Int8Decision:
    """int8 is served when the 95% interval of its MCC minus fp32's lies entirely above -max_mcc_loss."""
    draws = resample_indices(len(labels), resamples, seed)
    comparison = paired_bootstrap(labels, int8_predictions, fp32_predictions, draws, num_classes)
    served = INT8 if comparison.delta_mcc.low >= -max_mcc_loss else FP32
    agreement = float((np.asarray(int8_predictions) == np.asarray(fp32_predictions)).mean())
    return Int8Decision(served, comparison, max_mcc_loss, agreement, len(labels), candidate, picked)


def record(decision: Int8Decision) -> None:
    """The comparison as metrics, the choice and its reason as tags of the active run, and a log line."""
    delta = decision.comparison.delta_mcc
    mlflow.log_metrics(
        {
            "int8_test_mcc_delta": delta.value,
            "int8_test_mcc_delta_low": delta.low,
            "int8_test_mcc_delta_high": delta.high,
            "int8_test_accuracy_delta": decision.comparison.delta_accuracy.value,
            "int8_test_label_agreement": decision.agreement,
            "int8_max_mcc_loss": decision.max_mcc_loss,
            "int8_served": float(decision.served == INT8),
            # the int8 model judged: dynamic or static, and how many feed-forward outputs it keeps in fp32
            "int8_dynamic": float(decision.candidate == DYNAMIC),
            "int8_fp32_ffn_outputs": float(CANDIDATES.get(decision.candidate, KEEP_FP32_FFN_OUTPUTS)),
        }
    )
    mlflow.set_tag(INT8_DECISION_TAG, decision.reason)
    (logger.info if decision.served == INT8 else logger.warning)("serve_variant=int8: %s", decision.reason)
