"""The names one room writes and another reads: run tags, model-version tags, registry aliases, metric
names, the monitor's verdict, and the `models:/` URI.

A name written in one room and read in another is a contract between them: written as a string literal in
both, a rename in one breaks the other silently. Here each is written once; every room imports it
(tests/unit/test_contract.py fails on a literal copy elsewhere). Plain constants grouped by kind, plus the
small types and functions that read and write them. Column names, splits and the label set are the data's
own contract (sentclf.schema).
"""

import json
import re
from dataclasses import dataclass

# --- Run tags: who writes them, who reads them ----------------------------------------------------------
STEP_TAG = "sentclf.step"  # every step's run (sentclf.tracking.step_run): the step's name; conductor, ops
# Tags (not params: MLflow has already logged the MLproject's own values) naming the inputs a step resolved:
# `input.<name>` (sentclf.tracking.record_inputs).
INPUT_TAG_PREFIX = "input."
INPUT_DATA_RUN_TAG = "input.data_run_id"  # train, evaluate, monitor: the preprocess run they read
INPUT_SERVER_IMAGE_TAG = "input.server_image"  # evaluate: the server image it measured; kube serving reads
INPUT_DATASET_SHA256_TAG = "input.dataset_sha256"  # preprocess: the host data's manifest hash; ops reads
LABEL_NAMES_TAG = "label_names"  # preprocess run and model version: the class names in order, as JSON
MODEL_VERSION_TAG = "registered_model_version"  # train run (and the pipeline's parent): the version
SERVER_IMAGE_TAG = "server_image"  # building run and model version (and the parent): its server image
SERVED_NAME_TAG = "served_model_name"  # building run and model version: the name its server answers to
GATE_DECISION_TAG = "gate.decision"  # evaluate run: GATE_PROMOTED or GATE_KEPT; the conductor reads it
GATE_SUMMARY_TAG = "gate.summary"  # evaluate run: the gate's reasons in one line; the conductor reads it
GATE_PROMOTED, GATE_KEPT = "promoted", "kept"
SUMMARY_TAG = "summary"  # pipeline and search runs: the result in one line (train -e tune writes it)

# --- Model-version tags ---------------------------------------------------------------------------------
TRAIN_RUN_TAG = "train_run_id"  # model version: the run that trained it (train writes; lineage reads)

# --- Registry aliases: train sets `challenger` on each new version; only evaluate's gate moves `champion`.
CHALLENGER_ALIAS = "challenger"
CHAMPION_ALIAS = "champion"

# --- Metrics read outside the room that logs them -------------------------------------------------------
TEST_MCC_METRIC = "test_mcc"  # evaluate: the headline (also a model-version tag); the conductor reads it
TEST_MCC_LOW_METRIC, TEST_MCC_HIGH_METRIC = "test_mcc_low", "test_mcc_high"  # evaluate: its interval
SERVER_MEMORY_METRIC = "server_memory_peak_mb"  # evaluate: the server's peak memory; kube serving sizes by it
# evaluate's metrics the conductor copies onto the pipeline's parent run (the runs table compares them).
HEADLINE_METRIC_PREFIXES = ("test_", "latency_", "throughput_")

# --- The monitor's verdict ------------------------------------------------------------------------------
DRIFT_TAG = "drift"  # monitor run: "true" or "false"
DRIFT_FEATURES_TAG = "drift.features"  # monitor run: the drifted features, comma-separated, or "none"
VERDICT_ARTIFACT = "monitor/verdict.json"  # monitor run: the verdict with every feature's scores
# The one line of the monitor's output that carries its verdict, as JSON (ops.retrain_when reads it).
VERDICT_LINE_PREFIX = "monitor verdict: "


@dataclass(frozen=True)
class MonitorVerdict:
    """Whether the served traffic drifted from the model's data, and in which features."""

    drift: bool
    features: tuple[str, ...]
    threshold: float

    def as_dict(self) -> dict:
        return {"drift": self.drift, "features": list(self.features), "threshold": self.threshold}

    def tags(self) -> dict[str, str]:
        return {DRIFT_TAG: str(self.drift).lower(), DRIFT_FEATURES_TAG: ",".join(self.features) or "none"}

    def line(self) -> str:
        """The verdict's line in the monitor's output."""
        return VERDICT_LINE_PREFIX + json.dumps(self.as_dict())

    @classmethod
    def from_dict(cls, data: dict) -> "MonitorVerdict":
        return cls(bool(data["drift"]), tuple(data["features"]), float(data["threshold"]))

    @classmethod
    def from_output(cls, output: str) -> "MonitorVerdict | None":
        """The verdict in a monitor's output (its last verdict line), or None when it printed none."""
        lines = [line for line in output.splitlines() if line.startswith(VERDICT_LINE_PREFIX)]
        if not lines:
            return None
        try:
            return cls.from_dict(json.loads(lines[-1].removeprefix(VERDICT_LINE_PREFIX)))
        except (ValueError, KeyError, TypeError):
            return None


# --- Model URIs -----------------------------------------------------------------------------------------
MODELS_URI_SCHEME = "models:/"
_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))$")
MODEL_URI_FORMS = "models:/<name>/<version> or models:/<name>@<alias>"


@dataclass(frozen=True)
class ModelRef:
    """A registered model's version (`models:/<name>/<version>`) or alias (`models:/<name>@<alias>`)."""

    name: str
    version: str | None = None
    alias: str | None = None

    @property
    def uri(self) -> str:
        return model_uri(self.name, version=self.version, alias=self.alias)


def parse_model_uri(uri: str) -> ModelRef:
    """The name and the version or alias a `models:/` URI names; ValueError naming both forms otherwise."""
    found = _MODEL_URI.match(uri.strip())
    if not found:
        raise ValueError(f"{uri!r} is not {MODEL_URI_FORMS}")
    return ModelRef(found["name"], found["version"], found["alias"])


def model_uri(name: str, version: str | int | None = None, alias: str | None = None) -> str:
    """`models:/<name>/<version>` or `models:/<name>@<alias>` (exactly one of the two)."""
    if (version is None) == (alias is None):
        raise ValueError("a model URI names a version or an alias, exactly one")
    return f"{MODELS_URI_SCHEME}{name}/{version}" if alias is None else f"{MODELS_URI_SCHEME}{name}@{alias}"


def input_tag(name: str) -> str:
    """The run tag `input.<name>` that sentclf.tracking.record_inputs writes for a resolved input."""
    return f"{INPUT_TAG_PREFIX}{name}"


# The root MLproject's default `registered_model_name`, and its champion: what the host tools, the monitor
# and score read when no model is named.
DEFAULT_MODEL_NAME = "cola-classifier"
DEFAULT_CHAMPION_URI = model_uri(DEFAULT_MODEL_NAME, alias=CHAMPION_ALIAS)
