"""Which unlabelled sentences to ask a person about: the margin a model is least sure about, mixed with
diversity over its sentence vectors. Shared by the selection command (tools/label_next.py) and the bench
that measures it against random picks (bench/labelling_rounds.py), so the bench measures the command's
own logic."""

import numpy as np

# `predicted`: each predicted class takes its turn in a batch (select's `classes`); `none`: margin and
# diversity alone.
BALANCE_CHOICES = ("predicted", "none")
DEFAULT_BALANCE = "predicted"


def predicted_classes(probabilities: np.ndarray, balance: str) -> np.ndarray | None:
    """What `select` balances over for a --balance value: the argmax class, or None."""
    return probabilities.argmax(1) if balance == "predicted" else None


def uncertainty(probabilities: np.ndarray) -> np.ndarray:
    """1 - (top - second probability): 1 where the two best classes tie, 0 where one class is certain."""
    top = np.sort(probabilities, axis=1)[:, ::-1]
    return 1.0 - (top[:, 0] - top[:, 1])


def select(
    vectors: np.ndarray, scores: np.ndarray, count: int, weight: float, classes: np.ndarray | None = None
) -> list[int]:
    """Greedy maximal marginal relevance: each pick maximises weight * score - (1 - weight) * its highest
    cosine similarity to the picks so far (the first pick: the most uncertain).

    With `classes` (each candidate's predicted class) the classes take turns: each pick comes from a class
    with the fewest picks so far among those with candidates left. The margin is smallest between the two
    classes a model confuses most, so without turns a batch is mostly those two (docs/few-labels.md)."""
    unit = vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
    closest = np.full(len(scores), -1.0)  # no pick yet: nothing is similar
    chosen: list[int] = []
    available = np.ones(len(scores), dtype=bool)
    turns = None if classes is None else {int(c): 0 for c in np.unique(classes)}
    for _ in range(count):
        value = weight * scores - (1.0 - weight) * np.maximum(closest, 0.0)
        value[~available] = -np.inf
        if turns is not None:
            left = {c: n for c, n in turns.items() if np.any(available & (classes == c))}
            fewest = min(left.values())
            value[~np.isin(classes, [c for c, n in left.items() if n == fewest])] = -np.inf
        pick = int(np.argmax(value))
        chosen.append(pick)
        available[pick] = False
        closest = np.maximum(closest, unit @ unit[pick])
        if turns is not None:
            turns[int(classes[pick])] += 1
    return chosen
