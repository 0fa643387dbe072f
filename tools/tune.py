"""Entry point of the root MLproject's `tune` entry point (`mlflow run . -e tune`): preprocess once, then
the train step's search (`train -e tune`) on its splits, as child runs of one parent run.

Each root parameter goes to the step entry point that declares it (preprocess's `main`, train's `tune`),
read from the MLproject files as the pipeline's are (conductor.parameters). Local backend only; no step
cache (a search is not a step to reuse).
"""

import argparse
import logging
import os
import signal
import sys

import mlflow

from conductor.backends import StepFailed
from conductor.local_backend import LocalBackend
from conductor.parameters import PROJECT_DIR, declared
from conductor.pipeline_lock import pipeline_lock
from conductor.step_image import ensure_step_image
from sentclf.contract import SUMMARY_TAG
from sentclf.dataset_snapshot import build_manifest, locate_dataset, log_snapshot
from sentclf.engine import docker_client
from sentclf.tracking import (
    RUN_NAME_TAG,
    StepCancelled,
    configure_logging,
    mark_ml_experiment,
    raise_cancelled,
)

logger = logging.getLogger("tune")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    for name in declared(PROJECT_DIR, "tune"):
        parser.add_argument(f"--{name.replace('_', '-')}", required=True)
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> None:
    os.environ.pop("MLFLOW_EXPERIMENT_NAME", None)  # the steps find the experiment by id
    given = vars(args)
    with pipeline_lock(PROJECT_DIR):
        ensure_step_image(docker_client(), PROJECT_DIR)
        with mlflow.start_run() as parent:
            mlflow.set_tag(RUN_NAME_TAG, "tune pipeline")
            mark_ml_experiment(parent.info.experiment_id)
            backend = LocalBackend(PROJECT_DIR, parent.info.run_id)
            try:
                preprocess = {n: given[n] for n in declared(PROJECT_DIR / "preprocess") if n in given}
                data_path = locate_dataset(args.dataset, PROJECT_DIR)
                if data_path:
                    preprocess["dataset"] = log_snapshot(data_path, build_manifest(data_path))
                data = backend.run_step("preprocess", preprocess, run_name="preprocess")
                search = {n: given[n] for n in declared(PROJECT_DIR / "train", "tune") if n in given}
                search["data_run_id"] = data.info.run_id
                tune = backend.run_step("train", search, run_name="tune", entry_point="tune")
            except (StepCancelled, KeyboardInterrupt):
                mlflow.end_run("KILLED")
                raise
            mlflow.set_tags({"run_id.preprocess": data.info.run_id, "run_id.tune": tune.info.run_id})
            summary = tune.data.tags.get(SUMMARY_TAG, "")
            mlflow.set_tag(SUMMARY_TAG, summary)
            logger.info("search finished: run %s: %s", tune.info.run_id, summary)


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    signal.signal(signal.SIGTERM, raise_cancelled)
    args = parse_args(argv)
    try:
        run(args)
    except (StepFailed, RuntimeError, ValueError) as error:
        logger.error("%s", error)
        return 1
    except (StepCancelled, KeyboardInterrupt):
        logger.error("cancelled: the running step was stopped, its runs end KILLED")
        return 143
    return 0


if __name__ == "__main__":
    sys.exit(main())
