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
# preprocess run (sentclf.tracking.record_inputs): the data's name, the sha256 of its manifest (host files
# and the shipped CoLA; none for hub data; ops.retrain_when compares it) and the snapshot's URI (host files
# only); the model card reads all three.
INPUT_DATASET_TAG = "input.dataset"
INPUT_DATASET_SHA256_TAG = "input.dataset_sha256"
INPUT_DATASET_SNAPSHOT_TAG = "input.dataset_snapshot"
LABEL_NAMES_TAG = "label_names"  # preprocess run and model version: the class names in order, as JSON
# preprocess run, train run and model version of a sentence-pair task: the user's second text column
# (absent: single sentences); the serving config says the same to the runtime (text_pair_input).
TEXT_PAIR_TAG = "task.text_pair_column"
MODEL_VERSION_TAG = "registered_model_version"  # train run (and the pipeline's parent): the version
SERVER_IMAGE_TAG = "server_image"  # building run and model version (and the parent): its server image
SERVED_NAME_TAG = "served_model_name"  # building run and model version: the name its server answers to
PRECISION_USED_TAG = "precision_used"  # train run: the precision that ran (bf16|fp32); the model card reads
SERVED_VARIANT_TAG = "served_variant"  # train run: the ONNX variant it logged and serves; the card reads
# train run: the ONNX variants it built but does not serve (an int8 model's fp32 twin: the benches read it)
ONNX_VARIANTS_DIR = "onnx_variants"
# train run with serve_variant=int8: int8 against fp32 on the test rows, and the choice, in one line (card)
INT8_DECISION_TAG = "int8.decision"
# evaluate run (and the pipeline's parent, copied there): GATE_PROMOTED or GATE_KEPT; the conductor reads it
GATE_DECISION_TAG = "gate.decision"
GATE_SUMMARY_TAG = "gate.summary"  # evaluate run: the gate's reasons in one line; the conductor reads it
GATE_PROMOTED, GATE_KEPT = "promoted", "kept"
SUMMARY_TAG = "summary"  # pipeline and search runs: the result in one line (train -e tune writes it)

# --- Model-version tags ---------------------------------------------------------------------------------
TRAIN_RUN_TAG = "train_run_id"  # model version: the run that trained it (train writes; lineage reads)
# train run: how the version was trained (TRAINING_FEW_SHOT or TRAINING_FINE_TUNE), on how many labelled
# rows, and how it was validated (VALIDATION_HELD_OUT or "cross_validation_<k>_folds"); the model card
# reads them.
TRAINING_MODE_TAG = "training_mode"
TRAINING_ROWS_TAG = "training_rows"
# train run: how many unlabelled texts (preprocess's `unlabelled`) the teacher labelled for the student.
TRAINING_UNLABELLED_ROWS_TAG = "training_unlabelled_rows"
VALIDATION_MODE_TAG = "validation_mode"
TRAINING_FEW_SHOT, TRAINING_FINE_TUNE = "few_shot", "fine_tune"
VALIDATION_HELD_OUT = "held_out"
# preprocess and train: the fewest training rows per class few-shot training takes (a positive pair needs
# two); preprocess lets a class this small through without a validation split, train cross-validates then.
FEW_SHOT_MIN_ROWS_PER_CLASS = 2

# --- Registry aliases: train sets `challenger` on each new version; only evaluate's gate moves `champion`.
CHALLENGER_ALIAS = "challenger"
CHAMPION_ALIAS = "champion"

# --- Metrics read outside the room that logs them -------------------------------------------------------
TEST_MCC_METRIC = "test_mcc"  # evaluate: the headline (also a model-version tag); the conductor reads it
TEST_MCC_LOW_METRIC, TEST_MCC_HIGH_METRIC = "test_mcc_low", "test_mcc_high"  # evaluate: its interval
# evaluate (multi-label versions): the headline instead of test_mcc (also a model-version tag); the
# conductor reads it
TEST_MICRO_F1_METRIC = "test_micro_f1"
SERVER_MEMORY_METRIC = "server_memory_peak_mb"  # evaluate: the server's peak memory; kube serving sizes by it
# evaluate's metrics the conductor copies onto the pipeline's parent run (the runs table compares them).
HEADLINE_METRIC_PREFIXES = ("test_", "latency_", "throughput_")
# The parent run's headline besides those, as metrics the run list can show as columns and sort by: the
# version it registered (the same name as MODEL_VERSION_TAG: the parent carries it as both) and whether the
# gate promoted it (1) or kept the champion (0). Read by the docs and whoever compares pipelines.
HEADLINE_VERSION_METRIC = MODEL_VERSION_TAG
HEADLINE_PROMOTED_METRIC = "gate_promoted"

# --- The data's label audit (preprocess/label_audit.py): the training rows whose label looks wrong, most
# suspect first, as an artifact of the preprocess run, and how many rows it audited (a seeded sample above
# label_audit_max_rows); evaluate shows the top of it in its report.
LABEL_AUDIT_ARTIFACT = "label_issues.csv"
LABEL_AUDIT_ROWS_METRIC = "label_audit_rows"

# --- The live loop (sentclf.live, ops.promote_live): the challenger's decision on live traffic, as tags of
# the challenger's model version.
LIVE_DECISION_TAG = "live.decision"  # GATE_PROMOTED or GATE_KEPT
LIVE_SUMMARY_TAG = "live.summary"  # the decision and its reasons in one line

# --- Served traffic: the fields of each record the server's capture writes (server/sentclf_server/capture.py,
# which imports nothing of the project; tests/server/test_shared_names.py holds it to these), read by the
# monitor and the live loop through sentclf.traffic. Records from before two-version serving lack the last
# four. The served model name, the version that produced the record, its predicted class index, the
# request's id (the caller's Open Inference Protocol id, or the server's), the sentence's position in the
# request, whether the answer went back to the caller (false: a shadow answer), and the route that chose the
# version (one of ROUTES).
MODEL_FIELD = "model"
VERSION_FIELD = "version"
PREDICTED_FIELD = "label"
REQUEST_ID_FIELD = "id"
SENTENCE_INDEX_FIELD = "index"
SERVED_FIELD = "served"
ROUTE_FIELD = "route"
SHADOW_ROUTE = "shadow"  # a challenger answering off the request path
ROUTES = (CHAMPION_ALIAS, CHALLENGER_ALIAS, SHADOW_ROUTE, "direct")
# Plain words that other rooms spell for other meanings (a column, a JSON key): the literal scan skips them.
CAPTURE_FIELDS = (
    MODEL_FIELD,
    VERSION_FIELD,
    PREDICTED_FIELD,
    REQUEST_ID_FIELD,
    SENTENCE_INDEX_FIELD,
    SERVED_FIELD,
    ROUTE_FIELD,
)

# --- The monitor's verdict ------------------------------------------------------------------------------
DRIFT_TAG = "drift"  # monitor run: "true" or "false"
DRIFT_FEATURES_TAG = "drift.features"  # monitor run: the drifted features, comma-separated, or "none"
VERDICT_ARTIFACT = "monitor/verdict.json"  # monitor run: the verdict with every feature's scores
# The one line of the monitor's output that carries its verdict, as JSON (ops.retrain_when reads it).
VERDICT_LINE_PREFIX = "monitor verdict: "


@dataclass(frozen=True)
class MonitorVerdict:
    """Whether the served traffic drifted from the model's data, and in which features; with `feedback`,
    `live` holds the live loop's part (monitor.live_traffic: each version's figures on the labels that came
    back, as a dict)."""

    drift: bool
    features: tuple[str, ...]
    threshold: float
    live: dict | None = None

    def as_dict(self) -> dict:
        found = {"drift": self.drift, "features": list(self.features), "threshold": self.threshold}
        return found if self.live is None else found | {"live": self.live}

    def tags(self) -> dict[str, str]:
        return {DRIFT_TAG: str(self.drift).lower(), DRIFT_FEATURES_TAG: ",".join(self.features) or "none"}

    def line(self) -> str:
        """The verdict's line in the monitor's output."""
        return VERDICT_LINE_PREFIX + json.dumps(self.as_dict())

    @classmethod
    def from_dict(cls, data: dict) -> "MonitorVerdict":
        return cls(bool(data["drift"]), tuple(data["features"]), float(data["threshold"]), data.get("live"))

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
