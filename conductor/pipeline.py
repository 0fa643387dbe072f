"""The pipeline: preprocess -> train -> building -> evaluate, as child runs of one parent run.

Opens the parent run (joined from `mlflow run .`), runs each sub-project through a backend (local: `mlflow
run <step>` in its own container) as a child run, and hands only run ids, model URIs and image tags from
one step to the next. A step whose code, parameters and inputs are unchanged is not run again: its earlier
run is reused (conductor.step_cache). Host data enters once, as a snapshot with hashes on this parent run.
One pipeline at a time per checkout (conductor.pipeline_lock).
"""

import argparse
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import docker.errors
import mlflow
from mlflow.entities import Run

from conductor.backends import Backend, StepFailed, make_backend
from conductor.image_gc import collect_server_images
from conductor.outcome import write_outcome
from conductor.parameters import (
    PROJECT_DIR,
    conductor_parameter_names,
    root_parameters,
    step_parameter_names,
    typed_default,
)
from conductor.pipeline_lock import pipeline_lock
from conductor.step_cache import code_fingerprint, find_cached_run, mark, step_key
from conductor.step_image import ensure_step_image
from conductor.ui_links import DEFAULT_UI, run_link
from sentclf.contract import (
    CHAMPION_ALIAS,
    GATE_DECISION_TAG,
    GATE_KEPT,
    GATE_PROMOTED,
    GATE_SUMMARY_TAG,
    HEADLINE_METRIC_PREFIXES,
    HEADLINE_PROMOTED_METRIC,
    HEADLINE_VERSION_METRIC,
    MODEL_VERSION_TAG,
    SERVER_IMAGE_TAG,
    SUMMARY_TAG,
    TEST_MCC_HIGH_METRIC,
    TEST_MCC_LOW_METRIC,
    TEST_MCC_METRIC,
    TEST_MICRO_F1_METRIC,
    ModelRef,
)
from sentclf.dataset_snapshot import build_manifest, locate_dataset, log_snapshot
from sentclf.engine import docker_client
from sentclf.tracking import RUN_NAME_TAG, StepCancelled, mark_ml_experiment
from sentclf.unlabelled_text import NO_UNLABELLED, source_fingerprint

logger = logging.getLogger("main")

DESCRIPTION_TAG = "mlflow.note.content"


def step_parameters(step: str, args: argparse.Namespace, **handed_on: str) -> dict[str, str]:
    """The step's share of the root parameters plus what earlier steps hand on (run ids, URIs, tags).
    Values are passed on as the strings MLflow gave us (it has already checked their types)."""
    return {name: getattr(args, name) for name in step_parameter_names()[step]} | handed_on


# A run name stays readable in the run list: each changed parameter's value is cut to this many characters.
NAME_VALUE_CHARS = 24


def dataset_label(dataset: str) -> str:
    """The data set as a run name shows it: a host file's or folder's own name, else `dataset` as given
    (`cola`, a hub id, a snapshot URI)."""
    path = locate_dataset(dataset, PROJECT_DIR)
    return path.name if path else dataset


def _as_declared(value: object, spec: dict) -> object:
    """A parameter's value as its declared type reads it, so `0.0002` and the default `2e-4` are equal."""
    try:
        return typed_default({**spec, "default": value})
    except ValueError:
        return str(value)


def changed_parameters(args: argparse.Namespace) -> dict[str, str]:
    """The parameters the steps take whose values differ from the root MLproject's defaults, in its order
    (the data set aside, and the conductor's own: cache, backend and images change how, not what)."""
    skipped = {"dataset", *conductor_parameter_names()}
    return {
        name: str(getattr(args, name))
        for name, spec in root_parameters().items()
        if name not in skipped and _as_declared(getattr(args, name), spec) != typed_default(spec)
    }


def run_name(args: argparse.Namespace, version: str | None = None, decision: str | None = None) -> str:
    """What tells pipeline runs apart in the run list, most telling first (the list cuts long names):
    `v3 promoted · cola · epochs=1 seed=7` once the gate decided, `cola · epochs=1 seed=7` before."""
    changed = " ".join(
        f"{name}={value if len(value) <= NAME_VALUE_CHARS else value[: NAME_VALUE_CHARS - 1] + '…'}"
        for name, value in changed_parameters(args).items()
    )
    parts = [f"v{version} {decision}" if version else "", dataset_label(args.dataset), changed]
    return " · ".join(part for part in parts if part)


def describe_parent(parent: Run, args: argparse.Namespace) -> None:
    """A name that tells this run from the others and a description, so `mlflow ui` shows what this run
    is at a glance; the name gains the registered version and the gate's decision at the end."""
    mlflow.set_tags(
        {
            RUN_NAME_TAG: run_name(args),
            DESCRIPTION_TAG: (
                f"Pipeline run: preprocess -> train -> building -> evaluate on `{args.dataset}`, model "
                f"`{args.registered_model_name}`. Each step that ran is a child run below; a step reused "
                "from an earlier pipeline (same code, parameters and inputs) is named in the tag "
                f"`cache.<step>`. The headline is copied here: the metrics `{HEADLINE_VERSION_METRIC}`, "
                f"`{TEST_MCC_METRIC}` with `{TEST_MCC_LOW_METRIC}`/`{TEST_MCC_HIGH_METRIC}` (95% interval) "
                f"and `{HEADLINE_PROMOTED_METRIC}` (1 promoted, 0 kept), the tags `{GATE_DECISION_TAG}` "
                f"and `{SUMMARY_TAG}`; `run_id.<step>` names every step's run."
            ),
        }
    )
    mark_ml_experiment(parent.info.experiment_id)


def unlabelled_path(unlabelled: str) -> Path | None:
    """The host file or folder `unlabelled` names (found as `dataset` is), None for none or a missing path
    (preprocess then says so)."""
    return locate_dataset(unlabelled, PROJECT_DIR) if unlabelled != NO_UNLABELLED else None


@dataclass(frozen=True)
class StepResult:
    run: Run
    key: str  # its cache key: what the steps that consume it key on

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    def tag(self, name: str) -> str:
        value = self.run.data.tags.get(name)
        if not value:
            raise StepFailed(f"run {self.run_id} finished without its tag {name!r}")
        return value


# A value handed to a step, or a function that makes it, called only if the step really runs.
HandOn = str | Callable[[], str]


class Pipeline:
    """The four steps of one pipeline run, each launched through the backend or reused from the cache."""

    def __init__(self, args: argparse.Namespace, parent: Run, backend: Backend) -> None:
        self.args = args
        self.parent = parent
        self.backend = backend
        self.reused: list[str] = []

    def run(self) -> None:
        args = self.args
        data_path = locate_dataset(args.dataset, PROJECT_DIR)
        manifest = build_manifest(data_path) if data_path else None
        # Unlabelled text (a teacher's, docs/teacher.md): keyed on its bytes, so new capture records make
        # a new preprocess run, and handed on as an absolute host path (`~` is this user's home).
        text_path = unlabelled_path(args.unlabelled)
        text_input = {"unlabelled": source_fingerprint(text_path)} if text_path else {}
        preprocess = self.step(
            "preprocess",
            inputs={"data": manifest.sha256 if manifest else args.dataset, **text_input},
            **({"dataset": lambda: log_snapshot(data_path, manifest)} if manifest else {}),
            **({"unlabelled": str(text_path)} if text_path else {}),
        )
        train = self.step("train", inputs={"preprocess": preprocess.key}, data_run_id=preprocess.run_id)
        version = train.tag(MODEL_VERSION_TAG)
        building = self.step(
            "building",
            inputs={"train": train.key, "base_image": args.server_base_image},
            model_uri=ModelRef(args.registered_model_name, version).uri,
            base_image=args.server_base_image,
        )
        evaluate = self.step(
            "evaluate",
            inputs={
                "building": building.key,
                "preprocess": preprocess.key,
                CHAMPION_ALIAS: self.rival(version),
            },
            server_image=building.tag(SERVER_IMAGE_TAG),
            data_run_id=preprocess.run_id,
            model_version=version,
        )
        self.summarize(preprocess, train, building, evaluate, version)

    def step(self, step: str, inputs: dict[str, str], **handed_on: HandOn) -> StepResult:
        """Reuse a finished run with the same key, or run the step and record its key."""
        parameters = step_parameters(step, self.args)
        own = {name: value for name, value in parameters.items() if name not in handed_on}
        key = step_key(step, code_fingerprint(PROJECT_DIR, step), own, inputs)
        cached = self.reusable(step, key) if self.args.use_cache else None
        if cached is not None:
            logger.info(
                "=== %s: reusing run %s (same code, parameters and inputs) ===", step, cached.info.run_id
            )
            mlflow.set_tags(
                {f"cache.{step}": f"reused {cached.info.run_id}", f"run_id.{step}": cached.info.run_id}
            )
            self.reused.append(step)
            return StepResult(cached, key)
        try:
            parameters |= {name: value() if callable(value) else value for name, value in handed_on.items()}
            logger.info("=== %s: starting with %s ===", step, parameters)
            run = self.backend.run_step(step, parameters, run_name=step)  # raises if the step failed
        except BaseException as error:  # a cancel too: which step it stopped
            if not getattr(error, "step", ""):  # which step it was, for the outcome (conductor.outcome)
                error.step = step
            raise
        run_id = run.info.run_id
        mlflow.set_tags({f"cache.{step}": "ran", f"run_id.{step}": run_id})
        mark(run_id, key)
        logger.info("=== %s: run %s finished ===", step, run_id)
        return StepResult(run, key)

    def reusable(self, step: str, key: str) -> Run | None:
        """A cached run, if what it produced is still there (a registered version, a local image)."""
        run = find_cached_run(self.parent.info.experiment_id, step, key)
        if run is None:
            return None
        try:
            if step == "train":
                version = run.data.tags[MODEL_VERSION_TAG]
                mlflow.MlflowClient().get_model_version(self.args.registered_model_name, version)
            if step == "building" and self.args.backend == "local":  # a cluster's images are in its registry
                docker_client().images.get(run.data.tags[SERVER_IMAGE_TAG])
        except (KeyError, mlflow.exceptions.MlflowException, docker.errors.ImageNotFound):
            logger.info(
                "%s run %s has the same key, but what it made is gone: running again", step, run.info.run_id
            )
            return None
        return run

    def rival(self, version: str) -> str:
        """The champion a new version is weighed against ('-' for none, or when it already is it)."""
        client = mlflow.MlflowClient()
        with contextlib.suppress(mlflow.exceptions.MlflowException):
            champion = client.get_model_version_by_alias(
                self.args.registered_model_name, CHAMPION_ALIAS
            ).version
            return "-" if str(champion) == version else str(champion)
        return "-"

    def summarize(
        self,
        preprocess: StepResult,
        train: StepResult,
        building: StepResult,
        evaluate: StepResult,
        version: str,
    ) -> None:
        metrics = evaluate.run.data.metrics
        decision = evaluate.run.data.tags.get(GATE_DECISION_TAG, GATE_KEPT)
        # The headline on the parent, read from the child runs through MLflow: the run list shows these
        # metrics and tags as columns, so pipelines compare at a glance without opening each.
        mlflow.set_tags(
            {
                MODEL_VERSION_TAG: version,
                SERVER_IMAGE_TAG: building.tag(SERVER_IMAGE_TAG),
                GATE_DECISION_TAG: decision,
                RUN_NAME_TAG: run_name(self.args, version, decision),
            }
        )
        headline = {k: v for k, v in metrics.items() if k.startswith(HEADLINE_METRIC_PREFIXES)}
        headline[HEADLINE_VERSION_METRIC] = float(version)
        headline[HEADLINE_PROMOTED_METRIC] = float(decision == GATE_PROMOTED)
        mlflow.log_metrics(headline)
        interval = (
            f" [{metrics[TEST_MCC_LOW_METRIC]:.4f}, {metrics[TEST_MCC_HIGH_METRIC]:.4f}]"
            if TEST_MCC_LOW_METRIC in metrics and TEST_MCC_HIGH_METRIC in metrics
            else ""
        )
        reasons = evaluate.run.data.tags.get(GATE_SUMMARY_TAG, "no gate decision recorded")
        if TEST_MCC_METRIC in metrics:
            summary = f"version {version}, test MCC {metrics[TEST_MCC_METRIC]:.4f}{interval}, {reasons}"
        else:  # a multi-label version (evaluate/multilabel_metrics.py): micro-F1 is its headline
            headline_f1 = metrics.get(TEST_MICRO_F1_METRIC, float("nan"))
            summary = f"version {version}, test micro-F1 {headline_f1:.4f}, {reasons}"
        mlflow.set_tag(SUMMARY_TAG, summary)
        logger.info("pipeline finished: parent run %s: %s", self.parent.info.run_id, summary)
        link = run_link(DEFAULT_UI, self.parent.info.experiment_id, self.parent.info.run_id)
        logger.info("see it in the UI (`make ui`): %s", link)
        write_outcome(
            summary,
            decision,
            version=version,
            reused=len(self.reused),
        )


def prune_storage_dirs() -> None:
    """`mlflow run` (this pipeline's own, and any step run alone) leaves an empty directory for `path`
    parameters under MLFLOW_TMP_DIR, which the venv points into .build/: remove the empty ones."""
    root = os.environ.get("MLFLOW_TMP_DIR")
    if not root or not Path(root).is_dir():
        return
    for directory in Path(root).iterdir():
        with contextlib.suppress(OSError):  # not empty (in use): left alone
            directory.rmdir()


def collect_images(args: argparse.Namespace) -> None:
    """After every pipeline: the server images no kept version uses go (best effort)."""
    try:
        collect_server_images(docker_client(), args.registered_model_name, int(args.keep_images))
    except (RuntimeError, docker.errors.DockerException, mlflow.exceptions.MlflowException) as error:
        logger.warning("server image clean-up skipped: %s", error)


def run_pipeline(args: argparse.Namespace) -> None:
    # The steps' own `mlflow run` finds the experiment by id (MLflow passes MLFLOW_EXPERIMENT_ID); a name
    # left in the environment as well would make its command line ambiguous.
    os.environ.pop("MLFLOW_EXPERIMENT_NAME", None)
    with pipeline_lock(PROJECT_DIR):
        # Inside the lock: a rebuild must not swap the image under a pipeline that is still running.
        logger.info("step image %s ready", ensure_step_image(docker_client(), PROJECT_DIR))
        try:
            with mlflow.start_run() as parent:
                describe_parent(parent, args)
                try:
                    Pipeline(args, parent, make_backend(args.backend, PROJECT_DIR, parent.info.run_id)).run()
                except (StepCancelled, KeyboardInterrupt):
                    mlflow.end_run("KILLED")
                    raise
        finally:
            if args.backend == "local":  # a cluster's images live in the user's registry
                collect_images(args)
            prune_storage_dirs()
