"""The server's model: the runtime's scorer (`sentclf_runtime.scorer`, the same code the pyfunc and the
benches run) configured from the server's settings, with its batch statistics going to the metrics.
"""

from __future__ import annotations

from collections.abc import Callable

from sentclf_runtime.scorer import (
    RUN_COST_BOUNDS,
    BatchStats,
    ModelError,
    Scorer,
    ScorerOptions,
    plan_buckets,
    softmax,
)

from .config import Settings

__all__ = ["RUN_COST_BOUNDS", "BatchStats", "ModelError", "SentenceClassifier", "plan_buckets", "softmax"]


def scorer_options(settings: Settings) -> ScorerOptions:
    return ScorerOptions(
        max_batch_size=settings.max_batch_size,
        length_bucketing=settings.length_bucketing,
        intra_op_threads=settings.ort_intra_op_threads,
        graph_optimization=settings.ort_graph_optimization,
        allow_spinning=settings.ort_allow_spinning,
    )


class SentenceClassifier(Scorer):
    """The scorer of MODEL_DIR's files, as the settings configure it."""

    def __init__(self, settings: Settings, observer: Callable[[BatchStats], None] | None = None) -> None:
        super().__init__(
            settings.model_path, settings.tokenizer_path, settings.serving, scorer_options(settings), observer
        )
        if self.labels != settings.labels:  # the server names the classes before the model loads
            raise ModelError(
                f"the model has {len(self.labels)} classes, serving_config.json names "
                f"{len(settings.labels)}: add the class names in order as 'labels'"
            )
