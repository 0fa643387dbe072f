"""What one evaluation found, as one value: the served measurements, parity, both models' scores on the
test rows (with per-class figures and the confusion matrix, named by the data's label set), the paired
comparison and the gate's decision. The report renders it and the step logs it; `Evaluation.metrics()` is
the one place the logged metric names are written."""

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from sentclf.contract import SERVER_MEMORY_METRIC
from sentclf.metrics import confusion_matrix
from sentclf.schema import LabelSet

from gate import Decision
from inputs import EvaluationInputs
from offline import Scores
from slices import SliceScore, flagged
from stats import (
    Interval,
    PairedComparison,
    accuracy_per_resample,
    class_counts,
    f1_macro,
    f1_weighted,
    interval,
    mcc_interval,
    precision_recall_f1,
    resampled_class_counts,
)


@dataclass(frozen=True)
class EvaluationData:
    """The test rows: texts, labels as class indices, and the label set that names the indices."""

    texts: list[str]
    labels: np.ndarray
    label_set: LabelSet
    # Dimension -> each row's slice (a length bucket, a slice column's value): see slices.py.
    groups: Mapping[str, Sequence[str]] = field(default_factory=dict)


@dataclass
class Served:
    """What the serving phase measured."""

    scores: Scores
    latency: dict[str, float]
    latency_samples: list[float]
    load: list[dict[str, float]]
    memory_peak_mb: float
    seconds_to_serving: float
    image_size_mb: float


@dataclass(frozen=True)
class Parity:
    """The served answers against in-process ONNX Runtime's on the registered model."""

    agreement: float  # share of rows with the same label
    max_abs_diff: float  # largest |Δprobability| over every row and class
    required: float


@dataclass(frozen=True)
class ClassScore:
    """One class's row of the per-class table."""

    name: str
    support: int  # test rows of the class
    predicted: int  # test rows predicted as the class
    prediction_share: float  # predicted / rows: the label share of the model's answers
    precision: float
    recall: float
    f1: float


@dataclass(frozen=True)
class ModelScores:
    """One model's scores on the test rows, with 95% bootstrap intervals."""

    version: str
    mcc: Interval
    accuracy: Interval
    f1_macro: Interval
    f1_weighted: Interval
    classes: tuple[ClassScore, ...]
    confusion: np.ndarray  # [classes, classes] counts, true labels on rows, predictions on columns

    def flat(self) -> dict[str, float]:
        """The scores under the names they are logged with (less the `test_` prefix)."""
        precision = np.array([c.precision for c in self.classes])
        recall = np.array([c.recall for c in self.classes])
        accuracy = self.accuracy.value
        result = {
            "accuracy": accuracy,
            "precision_macro": float(precision.mean()),
            "recall_macro": float(recall.mean()),
            "f1_macro": self.f1_macro.value,
            "precision_micro": accuracy,  # micro averages equal accuracy for single-label classification
            "recall_micro": accuracy,
            "f1_micro": accuracy,
            "mcc": self.mcc.value,
        }
        for index, scores in enumerate(self.classes):
            result[f"precision_class_{index}"] = scores.precision
            result[f"recall_class_{index}"] = scores.recall
            result[f"f1_class_{index}"] = scores.f1
        result |= {"mcc_low": self.mcc.low, "mcc_high": self.mcc.high}
        result |= {"accuracy_low": self.accuracy.low, "accuracy_high": self.accuracy.high}
        result |= {"f1_macro_low": self.f1_macro.low, "f1_macro_high": self.f1_macro.high}
        result |= {
            "f1_weighted": self.f1_weighted.value,
            "f1_weighted_low": self.f1_weighted.low,
            "f1_weighted_high": self.f1_weighted.high,
        }
        for index, scores in enumerate(self.classes):
            result[f"support_class_{index}"] = float(scores.support)
            result[f"prediction_share_class_{index}"] = scores.prediction_share
        return result


def score_model(
    version: str, labels: np.ndarray, predictions: np.ndarray, draws: np.ndarray, label_set: LabelSet
) -> ModelScores:
    """A model's scores on the test rows; `draws` are the bootstrap's resampled rows, shared by every
    model compared."""
    classes = label_set.size
    labels, predictions = np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)
    counts = class_counts(labels, predictions, classes)
    resampled = resampled_class_counts(labels, predictions, draws, classes)
    precision, recall, f1 = precision_recall_f1(counts)
    rows = len(labels)
    table = tuple(
        ClassScore(
            name,
            int(counts.true[i]),
            int(counts.predicted[i]),
            float(counts.predicted[i] / rows),
            float(precision[i]),
            float(recall[i]),
            float(f1[i]),
        )
        for i, name in enumerate(label_set.names)
    )
    return ModelScores(
        version,
        mcc_interval(labels, predictions, draws, classes),
        interval(float((labels == predictions).mean()), accuracy_per_resample(labels, predictions, draws)),
        interval(float(f1_macro(counts)), f1_macro(resampled)),
        interval(float(f1_weighted(counts)), f1_weighted(resampled)),
        table,
        confusion_matrix(labels, predictions, classes),
    )


@dataclass(frozen=True)
class LabelIssues:
    """The top of the data's label audit (preprocess's label_issues.csv), shown in the report."""

    total: int  # rows the audit lists
    audited: int  # rows it audited (0 when unknown)
    top: tuple[dict, ...]  # the most suspect rows: file, row, text, given_label, suggested_label, score


@dataclass(frozen=True)
class Evaluation:
    """Everything one evaluation found, for the report and the logging."""

    inputs: EvaluationInputs
    label_set: LabelSet
    rows: int
    challenger: ModelScores  # the served version
    champion: ModelScores | None  # the current champion, scored in process on the same rows
    comparison: PairedComparison | None  # challenger minus champion
    no_comparison: str  # why there is no comparison ("" when there is one)
    decision: Decision
    parity: Parity
    served: Served
    resamples: int
    requests_per_level: int
    slices: tuple[SliceScore, ...] = ()  # the served model by slice (slices.py)
    label_issues: LabelIssues | None = None  # None: the data run has no label audit
    pair_examples: tuple[dict, ...] = ()  # a sentence-pair task's first test pairs (pair_rows.py)

    @property
    def flagged_slices(self) -> list[SliceScore]:
        return flagged(self.slices)

    def metrics(self) -> dict[str, float]:
        """The run's metrics (parity's are logged where it is checked, before anything can fail)."""
        metrics = {f"test_{name}": value for name, value in self.challenger.flat().items()}
        metrics |= self.served.latency
        for row in self.served.load:
            level = row["concurrency"]
            metrics |= {
                f"throughput_rps_c{level}": row["throughput_rps"],
                f"latency_p50_ms_c{level}": row["p50_ms"],
                f"latency_p99_ms_c{level}": row["p99_ms"],
            }
        metrics |= {
            "throughput_rps": max(row["throughput_rps"] for row in self.served.load),
            SERVER_MEMORY_METRIC: self.served.memory_peak_mb,
            "server_image_size_mb": self.served.image_size_mb,
            "server_seconds_to_serving": self.served.seconds_to_serving,
        }
        if self.slices:
            metrics |= {"slices": len(self.slices), "slices_flagged": len(self.flagged_slices)}
        if self.champion is not None and self.comparison is not None:
            metrics |= {
                "champion_test_mcc": self.champion.mcc.value,
                "champion_test_mcc_low": self.champion.mcc.low,
                "champion_test_mcc_high": self.champion.mcc.high,
                "delta_mcc": self.comparison.delta_mcc.value,
                "delta_mcc_low": self.comparison.delta_mcc.low,
                "delta_mcc_high": self.comparison.delta_mcc.high,
                "delta_accuracy": self.comparison.delta_accuracy.value,
                "delta_accuracy_low": self.comparison.delta_accuracy.low,
                "delta_accuracy_high": self.comparison.delta_accuracy.high,
                "share_resamples_challenger_better": self.comparison.share_better,
            }
        return {name: float(value) for name, value in metrics.items()}

    def summary(self) -> dict:
        """evaluation/report.json: the metrics, the decision, parity, load and the per-class figures."""
        return {
            "metrics": self.metrics(),
            "decision": {
                "promote": self.decision.promote,
                "summary": self.decision.summary,
                "checks": [str(check) for check in self.decision.checks],
            },
            "parity": {
                "agreement": self.parity.agreement,
                "max_abs_diff": self.parity.max_abs_diff,
                "required": self.parity.required,
            },
            "load": self.served.load,
            "label_set": self.label_set.as_dict(),
            "classes": [asdict(scores) for scores in self.challenger.classes],
            "confusion_matrix": self.challenger.confusion.tolist(),
            "slices": [score.as_dict() for score in self.slices],
            "label_issues": None
            if self.label_issues is None
            else {"total": self.label_issues.total, "audited": self.label_issues.audited},
        }
