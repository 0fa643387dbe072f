"""The model name a server answers to (`/v2/models/<name>/infer`), derived from the registered name."""

from __future__ import annotations

import re

# What every image built before the served name followed the registered model answered to.
LEGACY_SERVED_NAME = "cola"


def served_model_name(registered_name: str) -> str:
    """The registered name without its `-classifier`, kept to characters a URL path takes as they are:
    `cola-classifier` -> `cola`, `Support Tickets-classifier` -> `support-tickets`."""
    base = registered_name.lower().removesuffix("-classifier")
    return re.sub(r"[^a-z0-9_.-]+", "-", base).strip("-.") or "model"
