"""RETRAIN_WHEN for scripts/retrain.sh: whether tonight's retrain runs.

    python -m ops.retrain_when --when {new-data,drift,always} [--traffic DIR] [--model URI]
                               [--feedback DIR] -- ARGS

ARGS are the pipeline's (`-P dataset=...`). Prints one line, the night's summary, and exits:
  0   retrain (new-data; always; drift with new data)
  10  skip: the monitor found no drift
  11  skip: drift, but the data set is what the champion was trained on (new labels are needed)
  1   cannot decide: no RETRAIN_TRAFFIC, the monitor failed (its output is on stderr)

"New data" means the data set's files hash (sha256 manifest) to something else than the data the champion's
preprocess run recorded (tag input.dataset_sha256); the shipped CoLA is hashed the same way (a champion
from before it was, with no hash recorded, counts as trained on it); a hub id is new only when the champion
was trained on files.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import mlflow

from sentclf.contract import (
    CHAMPION_ALIAS,
    DEFAULT_MODEL_NAME,
    INPUT_DATASET_SHA256_TAG,
    ModelRef,
    MonitorVerdict,
    parse_model_uri,
)
from sentclf.dataset_snapshot import build_manifest, locate_dataset

PROJECT_DIR = Path(__file__).resolve().parent.parent
# The shipped CoLA's files (preprocess/sources' SHIPPED_COLA_DIR): preprocess records their manifest's hash.
SHIPPED_COLA_DIR = PROJECT_DIR / "preprocess" / "data" / "cola"
RETRAIN, NO_DRIFT, NEEDS_LABELS, FAILED = 0, 10, 11, 1


def pipeline_parameter(args: list[str], name: str, default: str) -> str:
    """The value of `-P name=value` (or `-Pname=value`) among the pipeline's arguments."""
    value = default
    for index, arg in enumerate(args):
        given = args[index + 1] if arg == "-P" and index + 1 < len(args) else arg.removeprefix("-P")
        if given.startswith(f"{name}="):
            value = given.split("=", 1)[1]
    return value


def run_monitor(traffic: str, model: str, feedback: str = "") -> MonitorVerdict:
    """The verdict of `mlflow run monitor` (its JSON line, sentclf.contract.MonitorVerdict; with `feedback`,
    each served version's live figures too); its output goes to stderr (the retrain log)."""
    command = [
        "mlflow",
        "run",
        str(PROJECT_DIR / "monitor"),
        "-P",
        f"traffic={traffic}",
        "-P",
        f"model={model}",
    ]
    if feedback:
        command += ["-P", f"feedback={feedback}"]
    result = subprocess.run(command, cwd=PROJECT_DIR, capture_output=True, text=True, check=False)
    sys.stderr.write(result.stdout + result.stderr)
    verdict = MonitorVerdict.from_output(result.stdout + "\n" + result.stderr)
    if result.returncode != 0 or verdict is None:
        raise RuntimeError(f"the monitor failed (exit {result.returncode}); its output is in the log above")
    return verdict


def has_new_data(dataset: str, model: str) -> bool:
    """Whether `dataset` differs from the data the model version `model` was trained on."""
    from sentclf.tracking import version_data_run_id

    client = mlflow.MlflowClient()
    ref = parse_model_uri(model)
    name = ref.name
    try:
        if ref.alias:
            version = client.get_model_version_by_alias(name, ref.alias)
        else:
            version = client.get_model_version(name, ref.version)
    except mlflow.exceptions.MlflowException:
        return True  # no champion: nothing to keep
    data_run_id = version_data_run_id(name, str(version.version))
    if not data_run_id:
        return True
    tags = client.get_run(data_run_id).data.tags
    trained_on = tags.get(INPUT_DATASET_SHA256_TAG)
    if dataset == "cola":
        return trained_on is not None and trained_on != build_manifest(SHIPPED_COLA_DIR).sha256
    path = locate_dataset(dataset, PROJECT_DIR)
    if path is None:  # a hub id: no hashes; new only if the champion was trained on files
        return trained_on is not None
    return build_manifest(path).sha256 != trained_on


def decide(
    when: str, traffic: str, model: str, pipeline_args: list[str], feedback: str = ""
) -> tuple[int, str]:
    if when == "new-data":
        return RETRAIN, "retraining when the data changed (RETRAIN_WHEN=new-data)"
    if when == "always":
        return RETRAIN, "retraining whatever the data (RETRAIN_WHEN=always)"
    if not traffic:
        return FAILED, "RETRAIN_WHEN=drift needs RETRAIN_TRAFFIC, the server's capture folder"
    name = pipeline_parameter(pipeline_args, "registered_model_name", DEFAULT_MODEL_NAME)
    model = model or ModelRef(name, alias=CHAMPION_ALIAS).uri
    try:
        verdict = run_monitor(traffic, model, feedback)
    except RuntimeError as error:
        return FAILED, f"RETRAIN_WHEN=drift: {error}"
    features = ",".join(verdict.features)
    if not verdict.drift:
        return NO_DRIFT, f"skipped: no drift in the served traffic ({traffic}) against {model}"
    dataset = pipeline_parameter(pipeline_args, "dataset", "cola")
    if not has_new_data(dataset, model):
        return NEEDS_LABELS, (
            f"drift in {features} against {model}: new labels are needed (dataset {dataset} is what the "
            "champion was trained on); nothing retrained"
        )
    return RETRAIN, f"drift in {features} and new data in {dataset}: retraining"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--when", choices=["new-data", "drift", "always"], default="new-data")
    parser.add_argument("--traffic", default="")
    parser.add_argument("--model", default="")
    parser.add_argument("--feedback", default="", help="labels that came back: the monitor's live figures")
    parser.add_argument("pipeline_args", nargs="*")
    args = parser.parse_args(argv)
    status, line = decide(args.when, args.traffic, args.model, args.pipeline_args, args.feedback)
    print(line, flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
