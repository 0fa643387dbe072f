"""Decision threshold tuned on validation, folded into the classifier's bias.

Cross-entropy training puts the argmax threshold where it maximises likelihood, not MCC; on CoLA (about
70% acceptable) the fine-tuned model predicts `acceptable` too often. Shifting the margin
(logit 1 - logit 0) by the amount that maximises validation MCC, and adding that shift to the head's
bias, moves the decision without touching anything else: the exported ONNX model, the server and every
consumer of the logits make the same, calibrated decision.
"""

import numpy as np
import torch


def mcc_at_shifts(labels: np.ndarray, margins: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """MCC of `margin + shift > 0` as the prediction of label 1, for every shift at once."""
    positive = labels == 1
    # For a shift s, rows with margin > -s are predicted 1: count them with a sorted search.
    order = np.argsort(margins)
    sorted_margins, sorted_positive = margins[order], positive[order]
    positives_at_or_below = np.concatenate([[0], np.cumsum(sorted_positive)])
    cut = np.searchsorted(sorted_margins, -shifts, side="right")  # rows predicted 0
    predicted_negative = cut
    false_negative = positives_at_or_below[cut]
    true_negative = predicted_negative - false_negative
    true_positive = positive.sum() - false_negative
    false_positive = (len(labels) - predicted_negative) - true_positive
    tp, tn, fp, fn = (
        x.astype(np.float64) for x in (true_positive, true_negative, false_positive, false_negative)
    )
    denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return np.divide(tp * tn - fp * fn, denominator, out=np.zeros_like(tp), where=denominator > 0)


def best_margin_shift(labels: np.ndarray, logits: np.ndarray) -> tuple[float, float, float]:
    """(shift, MCC without it, MCC with it): the shift of logit 1 - logit 0 that maximises MCC.

    Candidates are the midpoints between neighbouring margins (and 0); of equally good shifts the
    smallest in size wins, so a model that needs none keeps its decision.
    """
    margins = (logits[:, 1] - logits[:, 0]).astype(np.float64)
    ordered = np.sort(margins)
    candidates = np.concatenate([[0.0], -(ordered[:-1] + ordered[1:]) / 2])
    scores = mcc_at_shifts(labels, margins, candidates)
    best = max(range(len(candidates)), key=lambda i: (round(scores[i], 12), -abs(candidates[i])))
    return float(candidates[best]), float(scores[0]), float(scores[best])


def output_layer(model: torch.nn.Module) -> torch.nn.Linear:
    """The linear layer that produces the two logits: `classifier` itself (BERT-style heads) or its last
    linear layer (RoBERTa-style heads have a dense layer before `out_proj`)."""
    head = getattr(model, "classifier", None)
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)] if head is not None else []
    if not linears or linears[-1].out_features != 2:
        raise ValueError(
            f"cannot find the 2-logit output layer of {type(model).__name__}: run with tune_threshold=false"
        )
    return linears[-1]


@torch.no_grad()
def fold_shift_into_head(head: torch.nn.Linear, shift: float) -> None:
    """Add `shift` to the margin of every prediction: logit 1 - logit 0 grows by exactly `shift`."""
    head.bias[1] += shift / 2
    head.bias[0] -= shift / 2
