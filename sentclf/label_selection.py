"""Which unlabelled sentences to ask a person about: the margin a model is least sure about, mixed with
diversity over its sentence vectors. Shared by the selection command (tools/label_next.py) and the bench
that measures it against random picks (bench/labelling_rounds.py), so the bench measures the command's
own logic."""

import numpy as np


def uncertainty(probabilities: np.ndarray) -> np.ndarray:
    """1 - (top - second probability): 1 where the two best classes tie, 0 where one class is certain."""
    top = np.sort(probabilities, axis=1)[:, ::-1]
    return 1.0 - (top[:, 0] - top[:, 1])


def select(vectors: np.ndarray, scores: np.ndarray, count: int, weight: float) -> list[int]:
    """Greedy maximal marginal relevance: each pick maximises weight * score - (1 - weight) * its highest
    cosine similarity to the picks so far (the first pick: the most uncertain)."""
    unit = vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
    closest = np.full(len(scores), -1.0)  # no pick yet: nothing is similar
    chosen: list[int] = []
    available = np.ones(len(scores), dtype=bool)
    for _ in range(count):
        value = weight * scores - (1.0 - weight) * np.maximum(closest, 0.0)
        value[~available] = -np.inf
        pick = int(np.argmax(value))
        chosen.append(pick)
        available[pick] = False
        closest = np.maximum(closest, unit @ unit[pick])
    return chosen
