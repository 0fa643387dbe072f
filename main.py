"""Conductor of the pipeline: preprocess -> train -> building -> evaluate.

Opens the parent run (joined from `mlflow run .`), runs each sub-project with `mlflow.projects.run` in
its own container as a child run, and hands only run ids, model URIs and image tags from one step to the
next. Defaults live in the root MLproject; this script takes every parameter explicitly.
"""

import argparse
import logging
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import mlflow
from mlflow.entities import Run

from sentclf.engine import docker_client
from sentclf.images import STEP_IMAGE, ensure_step_image
from sentclf.tracking import STEP_TAG, configure_logging

logger = logging.getLogger("main")

PROJECT_DIR = Path(__file__).resolve().parent
# Steps reach the tracking store through its mounts and, for an http:// tracking URI or the servers
# they start, through loopback: the host network is the only one a container needs.
DOCKER_ARGS = {"network": "host"}
CACHEABLE_STEPS = ("preprocess", "train")


class Terminated(Exception):
    """SIGTERM arrived (a scheduler or `timeout` stopping the pipeline)."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(f"signal {signum}")


class StepFailed(RuntimeError):
    """A child step ended in failure; the message names it, its run id and where its log is."""


# The root parameters each step takes, under the same names as in the step's MLproject. Values are passed
# on as the strings MLflow gave us (it has already checked their types against the root MLproject).
STEP_PARAMETERS = {
    "preprocess": (
        "dataset",
        "text_column",
        "label_column",
        "val_fraction",
        "test_fraction",
        "seed",
        "overlap_policy",
        "registered_model_name",
        "drift_threshold",
        "fail_on_drift",
    ),
    "train": (
        "epochs",
        "max_train_samples",
        "batch_size",
        "learning_rate",
        "max_seq_length",
        "seed",
        "base_model",
        "serve_variant",
        "registered_model_name",
    ),
    "building": (),
    "evaluate": ("registered_model_name",),
}
CONDUCTOR_PARAMETERS = ("server_base_image", "use_cache")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    names = sorted({name for names in STEP_PARAMETERS.values() for name in names} | set(CONDUCTOR_PARAMETERS))
    for name in names:
        parser.add_argument(f"--{name.replace('_', '-')}", required=True)
    args = parser.parse_args(argv)
    args.use_cache = args.use_cache.lower() in ("1", "true", "yes")
    return args


def step_parameters(step: str, args: argparse.Namespace, **handed_on: str) -> dict[str, str]:
    """The step's share of the root parameters plus what earlier steps hand on (run ids, URIs, tags)."""
    return {name: getattr(args, name) for name in STEP_PARAMETERS[step]} | handed_on


def git_tree_is_clean() -> bool:
    """Cached step runs are reused only for committed code: a dirty tree may differ from the commit."""
    result = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode == 0 and not result.stdout.strip()


def find_cached_run(step: str, parameters: dict[str, str], git_commit: str | None) -> Run | None:
    """A FINISHED run of `step` from the same commit with the same parameters, as in MLflow's
    multistep example's `_already_ran`."""
    if not git_commit:
        return None
    experiment_id = mlflow.active_run().info.experiment_id
    candidates = mlflow.search_runs(
        experiment_ids=[experiment_id],
        filter_string=(
            f"tags.`{STEP_TAG}` = '{step}' and attributes.status = 'FINISHED' "
            f"and tags.`mlflow.source.git.commit` = '{git_commit}'"
        ),
        order_by=["attributes.start_time DESC"],
        output_format="list",
    )
    for run in candidates:
        if all(run.data.params.get(key) == value for key, value in parameters.items()):
            return run
    return None


def run_step(step: str, parameters: dict[str, str], use_cache: bool, git_commit: str | None) -> Run:
    """Run one sub-project as a child run and return its finished run."""
    if use_cache and step in CACHEABLE_STEPS:
        cached = find_cached_run(step, parameters, git_commit)
        if cached is not None:
            logger.info("=== %s: reusing run %s (same commit and parameters) ===", step, cached.info.run_id)
            mlflow.set_tag(f"cached.{step}", "true")
            return cached
    logger.info("=== %s: starting with %s ===", step, parameters)
    # MLflow's `mlflow run` makes a directory for downloaded `path` parameters under storage_dir (the
    # system temp dir by default) and never removes it: give it one that goes when the step ends.
    with tempfile.TemporaryDirectory(prefix=f"sentclf-{step}-storage-") as storage_dir:
        submitted = mlflow.projects.run(
            uri=str(PROJECT_DIR / step),
            entry_point="main",
            parameters=parameters,
            env_manager="local",
            docker_args=DOCKER_ARGS,
            build_image=False,
            synchronous=False,
            storage_dir=storage_dir,
        )
        try:
            succeeded = submitted.wait()
        except (KeyboardInterrupt, Terminated):
            # Stop the step's `docker run` (it forwards the signal to the container, which --rm removes).
            submitted.cancel()
            raise
    run = mlflow.get_run(submitted.run_id)
    if not succeeded or run.info.status != "FINISHED":
        raise StepFailed(
            f"step {step} failed (run {submitted.run_id}, status {run.info.status}). Its log is in the "
            f"output above and in the run's artifacts: `mlflow artifacts download -r {submitted.run_id} "
            f"-a logs`, or `mlflow ui` -> run {submitted.run_id} -> Artifacts -> logs/{step}.log"
        )
    logger.info("=== %s: run %s finished ===", step, submitted.run_id)
    return run


def required_tag(run: Run, tag: str, step: str) -> str:
    value = run.data.tags.get(tag)
    if not value:
        raise StepFailed(f"step {step} (run {run.info.run_id}) finished without its tag {tag!r}")
    return value


def run_pipeline(args: argparse.Namespace) -> None:
    with mlflow.start_run() as parent:
        git_commit = parent.data.tags.get("mlflow.source.git.commit")
        use_cache = args.use_cache and git_tree_is_clean()
        if args.use_cache and not use_cache:
            logger.info("working tree has uncommitted changes: every step runs afresh")

        preprocess = run_step("preprocess", step_parameters("preprocess", args), use_cache, git_commit)
        data_run_id = preprocess.info.run_id

        train = run_step(
            "train", step_parameters("train", args, data_run_id=data_run_id), use_cache, git_commit
        )
        model_version = required_tag(train, "registered_model_version", "train")

        model_uri = f"models:/{args.registered_model_name}/{model_version}"
        building = run_step(
            "building",
            step_parameters("building", args, model_uri=model_uri, base_image=args.server_base_image),
            use_cache,
            git_commit,
        )
        server_image = required_tag(building, "server_image", "building")

        evaluate = run_step(
            "evaluate",
            step_parameters(
                "evaluate",
                args,
                server_image=server_image,
                data_run_id=data_run_id,
                model_version=model_version,
            ),
            use_cache,
            git_commit,
        )

        mlflow.set_tags(
            {
                "run_id.preprocess": data_run_id,
                "run_id.train": train.info.run_id,
                "run_id.building": building.info.run_id,
                "run_id.evaluate": evaluate.info.run_id,
                "registered_model_version": model_version,
                "server_image": server_image,
            }
        )
        # The headline figures on the parent too, so the runs table compares pipelines at a glance.
        mlflow.log_metrics(
            {
                k: v
                for k, v in evaluate.data.metrics.items()
                if k.startswith(("test_", "latency_", "throughput_"))
            }
        )
        logger.info(
            "pipeline finished: parent run %s, model version %s, image %s, test metrics %s",
            parent.info.run_id,
            model_version,
            server_image,
            {k: round(evaluate.data.metrics[k], 4) for k in ("test_accuracy", "test_mcc", "test_f1_macro")},
        )


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    signal.signal(signal.SIGTERM, _raise_terminated)
    args = parse_args(argv)
    try:
        # `mlflow run .` without `make`: build the step image here rather than fail on a missing one.
        ensure_step_image(docker_client(), PROJECT_DIR)
        logger.info("step image %s ready", STEP_IMAGE)
        run_pipeline(args)
    except RuntimeError as error:  # StepFailed, ImageError, no engine: the message says it all
        logger.error("%s", error)
        return 1
    except Terminated:
        logger.error("terminated: the running step was cancelled")
        return 143
    return 0


if __name__ == "__main__":
    sys.exit(main())
