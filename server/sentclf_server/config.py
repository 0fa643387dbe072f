"""Server settings: environment variables plus the model's serving_config.json."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sentclf_runtime.config import ConfigError, ServingConfig
from sentclf_runtime.names import LEGACY_SERVED_NAME
from sentclf_runtime.pairs import pair_input

__all__ = ["ConfigError", "Settings", "load_settings"]

# Names accepted by ORT_GRAPH_OPTIMIZATION (the runtime's scorer maps them to onnxruntime's enum; this
# module stays importable and testable without onnxruntime).
GRAPH_OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


@dataclass(frozen=True)
class Settings:
    model_dir: Path
    model_name: str
    model_version: str
    serving: ServingConfig  # MODEL_DIR/serving_config.json
    bind_address: str = "0.0.0.0"
    grpc_port: int = 8001
    metrics_port: int = 8002
    http_port: int = 8000  # 0: no HTTP listener
    max_batch_size: int = 32
    max_batch_delay_s: float = 0.002
    max_concurrent_batches: int = 2
    length_bucketing: bool = True
    rpc_threads: int = 128
    max_request_batch: int = 256
    max_message_bytes: int = 4 * 1024 * 1024
    grace_period_s: float = 10.0
    drain_delay_s: float = 0.0
    ort_intra_op_threads: int = 0
    ort_graph_optimization: str = "all"
    ort_allow_spinning: bool = False
    capture_dir: Path | None = None  # None: no capture
    capture_sample: float = 1.0
    capture_max_mb: float = 100.0
    capture_text: bool = True

    @property
    def labels(self) -> tuple[str, ...]:
        return self.serving.labels

    @property
    def pair_input(self) -> str | None:
        """A sentence-pair model's second input (sentclf_runtime.pairs); None: single sentences."""
        return pair_input(self.serving)

    @property
    def max_seq_length(self) -> int:
        return self.serving.max_seq_length

    @property
    def model_path(self) -> Path:
        return self.model_dir / "model.onnx"

    @property
    def tokenizer_path(self) -> Path:
        return self.model_dir / "tokenizer.json"


def _number(env: Mapping[str, str], name: str, default: float, minimum: float, kind: type = int) -> float:
    """An int (kind=int) or float (kind=float) setting from `env`, at least `minimum`."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        article = "an integer" if kind is int else "a number"
        raise ConfigError(f"{name} must be {article}, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from the environment (default: os.environ) and MODEL_DIR/serving_config.json."""
    env = os.environ if env is None else env
    model_dir = Path(env.get("MODEL_DIR", "/models/model"))
    serving = ServingConfig.read(model_dir)
    # Env overrides win so one image can serve a model under another name/version.
    model_name = env.get("MODEL_NAME", "").strip() or serving.model_name or LEGACY_SERVED_NAME
    model_version = env.get("MODEL_VERSION", "").strip() or serving.model_version or "1"
    graph_opt = env.get("ORT_GRAPH_OPTIMIZATION", "all").strip().lower() or "all"
    if graph_opt not in GRAPH_OPTIMIZATION_LEVELS:
        allowed = "|".join(GRAPH_OPTIMIZATION_LEVELS)
        raise ConfigError(f"ORT_GRAPH_OPTIMIZATION must be one of {allowed}, got {graph_opt!r}")
    capture_sample = _number(env, "CAPTURE_SAMPLE", 1.0, 0.0, float)
    if capture_sample > 1.0:
        raise ConfigError(f"CAPTURE_SAMPLE must be a share between 0 and 1, got {capture_sample}")
    capture_max_mb = _number(env, "CAPTURE_MAX_MB", 100.0, 0.0, float)
    if capture_max_mb <= 0:
        raise ConfigError("CAPTURE_MAX_MB must be > 0")
    capture_dir = env.get("CAPTURE_DIR", "").strip()
    return Settings(
        model_dir=model_dir,
        model_name=model_name,
        model_version=model_version,
        serving=serving,
        bind_address=env.get("BIND_ADDRESS", "").strip() or "0.0.0.0",
        grpc_port=_number(env, "GRPC_PORT", 8001, 0),
        metrics_port=_number(env, "METRICS_PORT", 8002, 0),
        http_port=_number(env, "HTTP_PORT", 8000, 0),
        max_batch_size=_number(env, "MAX_BATCH_SIZE", 32, 1),
        max_batch_delay_s=_number(env, "MAX_BATCH_DELAY_MS", 2.0, 0.0, float) / 1000.0,
        max_concurrent_batches=_number(env, "MAX_CONCURRENT_BATCHES", 2, 1),
        length_bucketing=_bool(env, "LENGTH_BUCKETING", True),
        rpc_threads=_number(env, "RPC_THREADS", 128, 1),
        max_request_batch=_number(env, "MAX_REQUEST_BATCH", 256, 1),
        max_message_bytes=_number(env, "MAX_MESSAGE_BYTES", 4 * 1024 * 1024, 1024),
        grace_period_s=_number(env, "GRACE_PERIOD_S", 10.0, 0.0, float),
        drain_delay_s=_number(env, "DRAIN_DELAY_S", 0.0, 0.0, float),
        ort_intra_op_threads=_number(env, "ORT_INTRA_OP_THREADS", 0, 0),
        ort_graph_optimization=graph_opt,
        ort_allow_spinning=_bool(env, "ORT_ALLOW_SPINNING", False),
        capture_dir=Path(capture_dir) if capture_dir else None,
        capture_sample=capture_sample,
        capture_max_mb=capture_max_mb,
        capture_text=_bool(env, "CAPTURE_TEXT", True),
    )
