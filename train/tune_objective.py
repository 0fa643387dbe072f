"""What the search (`train -e tune`) maximises, by the kind of task its data holds: the validation MCC of
one class per text (at the tuned threshold where the step ships one), or for several labels per text the
validation micro-F1 at per-label thresholds tuned on validation, which is what the train step selects
epochs on and ships (multilabel_head.py). One place names the per-epoch metric the pruner reads, the fit
summary's best value, and the words and metric names the parent run reports it under.
"""

from __future__ import annotations

from dataclasses import dataclass

from sentclf.multilabel_metrics import HEADLINE

from multilabel_head import TUNED_KEY


@dataclass(frozen=True)
class Objective:
    epoch_metric: str  # the per-epoch metric a trial reports to the pruner (train's `val_<key>`)
    best_metric: str  # the fit summary's best-epoch value: the trial's value, and the parent's metric
    words: str  # how logs and the run summary name it

    @property
    def short(self) -> str:
        """best.json's key for the best value."""
        return self.best_metric.removeprefix("best_")


def objective(multi_label: bool, calibrate: bool) -> Objective:
    """The search's objective for a prepared data set (train.Prepared's multi_label and calibrate)."""
    if multi_label:
        return Objective(f"val_{TUNED_KEY}", f"best_val_{HEADLINE}", "validation micro-F1")
    return Objective("val_mcc_tuned_threshold" if calibrate else "val_mcc", "best_val_mcc", "validation MCC")
