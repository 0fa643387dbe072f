"""`serving_config.json`, the one description of a registered version's model that travels with its files:
the class names in index order, how far the tokenizer truncates, and (in a server image) the name and
version the server answers to. One type, written by the train step, rewritten by building, read by the
server, the pyfunc and the monitor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .multilabel import (
    DEFAULT_THRESHOLD,
    LABEL_MODE_KEY,
    LABEL_MODES,
    MULTI_LABEL,
    SINGLE_LABEL,
    THRESHOLDS_KEY,
)

FILE_NAME = "serving_config.json"
# A config without `labels` (written before the label set was data) is a CoLA model.
DEFAULT_LABELS = ("unacceptable", "acceptable")
DEFAULT_MAX_SEQ_LENGTH = 128


class ConfigError(ValueError):
    """serving_config.json is missing or malformed."""


@dataclass(frozen=True)
class ServingConfig:
    """What a version's files say about themselves; `extra` keeps keys this type does not know, so a
    rewrite loses nothing."""

    labels: tuple[str, ...] = DEFAULT_LABELS
    max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH
    model_name: str | None = None
    model_version: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    # False for a config written before the label set was data: its class names are a guess (the scorer
    # names the classes of a graph with another class count by index).
    labels_given: bool = field(default=True, compare=False)
    # Several labels per text (sentclf_runtime.multilabel): `multi` scores with a sigmoid per label and
    # decides each label at its own threshold; `single` (absent from the file) is the softmax and argmax.
    label_mode: str = SINGLE_LABEL
    thresholds: tuple[float, ...] | None = None

    @property
    def multi_label(self) -> bool:
        return self.label_mode == MULTI_LABEL

    def label_thresholds(self) -> tuple[float, ...]:
        """A multi-label model's per-label thresholds (DEFAULT_THRESHOLD where the file gives none)."""
        return self.thresholds or (DEFAULT_THRESHOLD,) * len(self.labels)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = FILE_NAME) -> ServingConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"{where} must hold a JSON object")
        known = {"labels", "max_seq_length", "model_name", "model_version", LABEL_MODE_KEY, THRESHOLDS_KEY}
        max_seq_length = data.get("max_seq_length", DEFAULT_MAX_SEQ_LENGTH)
        if not isinstance(max_seq_length, int) or isinstance(max_seq_length, bool) or max_seq_length < 2:
            raise ConfigError(f"{where}: 'max_seq_length' must be an integer >= 2")
        name, version = data.get("model_name"), data.get("model_version")
        labels = _labels(data.get("labels", list(DEFAULT_LABELS)), where)
        return cls(
            labels=labels,
            max_seq_length=max_seq_length,
            model_name=None if name is None else str(name),
            model_version=None if version is None else str(version),
            extra={key: value for key, value in data.items() if key not in known},
            labels_given="labels" in data,
            label_mode=_label_mode(data.get(LABEL_MODE_KEY, SINGLE_LABEL), where),
            thresholds=_thresholds(data.get(THRESHOLDS_KEY), len(labels), where),
        )

    @classmethod
    def read(cls, path: str | Path) -> ServingConfig:
        """The config in `path`: a .json file, or a folder holding serving_config.json."""
        path = Path(path)
        if path.is_dir() or path.suffix != ".json":
            path = path / FILE_NAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"missing {path}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path} is not valid JSON: {exc}") from None
        return cls.from_dict(data, str(path))

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {**self.extra, "max_seq_length": self.max_seq_length}
        if self.labels_given:
            data["labels"] = list(self.labels)
        if self.model_name is not None:
            data["model_name"] = self.model_name
        if self.model_version is not None:
            data["model_version"] = self.model_version
        if self.multi_label:  # a single-label config's file stays as it was
            data[LABEL_MODE_KEY] = self.label_mode
            data[THRESHOLDS_KEY] = list(self.label_thresholds())
        return data

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        if path.is_dir():
            path = path / FILE_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")
        return path

    def served_as(self, model_name: str, model_version: str) -> ServingConfig:
        """The same model, answering to this name and version (what building bakes into an image)."""
        return replace(self, model_name=model_name, model_version=str(model_version))


def _labels(labels: Any, where: str) -> tuple[str, ...]:
    """The class names in index order: what `label_name` answers and ModelConfig lists."""
    if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(x, str) for x in labels):
        raise ConfigError(f"{where}: 'labels' must be a list of at least two strings")
    repeated = sorted({name for name in labels if labels.count(name) > 1})
    if repeated:
        raise ConfigError(f"{where}: 'labels' repeat {repeated}; each class needs its own name")
    return tuple(labels)


def _label_mode(mode: Any, where: str) -> str:
    if mode not in LABEL_MODES:
        raise ConfigError(f"{where}: '{LABEL_MODE_KEY}' must be one of {list(LABEL_MODES)}, got {mode!r}")
    return mode


def _thresholds(values: Any, count: int, where: str) -> tuple[float, ...] | None:
    """One decision threshold in (0, 1) per label, in label order; None when the file has none."""
    if values is None:
        return None
    ok = isinstance(values, list) and all(
        isinstance(v, int | float) and not isinstance(v, bool) and 0.0 < v < 1.0 for v in values
    )
    if not ok or len(values) != count:
        raise ConfigError(f"{where}: '{THRESHOLDS_KEY}' must be {count} numbers in (0, 1), one per label")
    return tuple(float(v) for v in values)
