"""Data profile: rows, class counts and shares by class name, text lengths in characters and backbone
tokens, vocabulary and out-of-vocabulary rate, and a length histogram figure."""

import json
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

from sentclf.backbone import measuring_tokenizer  # noqa: E402
from sentclf.schema import LABEL_COLUMN, LabelSet  # noqa: E402

from label_lists import label_counts  # noqa: E402
from text_pairs import model_texts  # noqa: E402

logger = logging.getLogger(__name__)


def backbone_tokenizer() -> Tokenizer:
    """The bundled backbone's fast tokenizer, measuring (sentclf.backbone.measuring_tokenizer)."""
    return measuring_tokenizer()


def profile_split(frame: pd.DataFrame, tokenizer: Tokenizer, label_set: LabelSet) -> dict:
    texts = model_texts(frame).tolist()  # a pair: both texts (text_pairs.py)
    encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
    token_lengths = np.array([len(e.ids) for e in encodings])
    char_lengths = model_texts(frame).str.len().to_numpy()
    unk_id = tokenizer.token_to_id("[UNK]")
    tokens = np.concatenate([np.asarray(e.ids) for e in encodings]) if encodings else np.array([])
    words = {word for text in texts for word in text.lower().split()}
    counts = label_counts(frame[LABEL_COLUMN], label_set.size)  # multi-label: rows holding each label
    return {
        "rows": len(frame),
        "label_share": {
            name: float(count / max(len(frame), 1))
            for name, count in zip(label_set.names, counts, strict=True)
        },
        "label_count": {name: int(count) for name, count in zip(label_set.names, counts, strict=True)},
        "chars": _describe(char_lengths),
        "tokens": _describe(token_lengths),
        "vocabulary_size": len(words),
        "oov_rate": float((tokens == unk_id).mean()) if tokens.size and unk_id is not None else 0.0,
    }


def _describe(values: np.ndarray) -> dict[str, float]:
    return {
        "mean": float(values.mean()),
        "p50": float(np.percentile(values, 50)),
        "p95": float(np.percentile(values, 95)),
        "max": float(values.max()),
    }


def length_histogram(splits: dict[str, pd.DataFrame], tokenizer: Tokenizer) -> plt.Figure:
    figure, axis = plt.subplots(figsize=(7, 4))
    for name, frame in splits.items():
        lengths = [
            len(e.ids) for e in tokenizer.encode_batch(model_texts(frame).tolist(), add_special_tokens=False)
        ]
        axis.hist(
            lengths, bins=range(0, max(lengths) + 2), alpha=0.5, density=True, label=f"{name} ({len(frame)})"
        )
    axis.set_xlabel("sentence length (backbone tokens)")
    axis.set_ylabel("share of sentences")
    axis.set_title("Sentence length by split")
    axis.legend()
    figure.tight_layout()
    return figure


def log_profile(splits: dict[str, pd.DataFrame], label_set: LabelSet, work_dir: Path) -> dict:
    """Compute, log (profile.json, metrics, histogram) and return the profile."""
    tokenizer = backbone_tokenizer()
    # A few-shot data set has an empty validation split (preprocess.no_validation_split): nothing to profile.
    splits = {name: frame for name, frame in splits.items() if len(frame)}
    profile = {name: profile_split(frame, tokenizer, label_set) for name, frame in splits.items()}
    path = work_dir / "profile.json"
    path.write_text(json.dumps(profile, indent=2))
    mlflow.log_artifact(str(path))
    mlflow.log_metrics(
        {
            f"{name}_{key}": value
            for name, split_profile in profile.items()
            for key, value in (
                ("tokens_mean", split_profile["tokens"]["mean"]),
                ("tokens_p95", split_profile["tokens"]["p95"]),
                ("tokens_max", split_profile["tokens"]["max"]),
                ("vocabulary_size", split_profile["vocabulary_size"]),
                ("oov_rate", split_profile["oov_rate"]),
            )
        }
    )
    figure = length_histogram(splits, tokenizer)
    mlflow.log_figure(figure, "profile/length_histogram.png")
    plt.close(figure)
    logger.info("profile: %s", {name: (p["rows"], p["tokens"]["p95"]) for name, p in profile.items()})
    return profile
