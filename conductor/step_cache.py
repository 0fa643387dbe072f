"""Reusing a step run whose outcome is already known: the step cache, keyed on content.

A step's key hashes what determines its outcome: its own code (the step's directory), what the step image
is built from (sentclf/, Dockerfile, the step requirements), its parameters, and the keys of what it
consumes (the data's sha256 for preprocess, preprocess's key for train, and so on down the chain). Run ids
handed from step to step are left out: a re-run of an unchanged upstream step must not invalidate
everything below it. So a README-only commit, an uncommitted change elsewhere or a rerun on unchanged
data reuses every step, while a new data batch, a changed train.py or another epoch count reruns exactly
the steps it affects.
"""

import hashlib
import json
from pathlib import Path

import mlflow
from mlflow.entities import Run

from conductor.step_image import STEP_IMAGE_SOURCES
from sentclf.contract import STEP_TAG
from sentclf.images import source_hash

CACHE_KEY_TAG = "sentclf.cache_key"
# Shared by every step: what the step image is built from (the shared package and the image's recipe).
SHARED_SOURCES = STEP_IMAGE_SOURCES


def code_fingerprint(project_dir: Path, step: str) -> str:
    """A hash over the step's directory and everything every step shares."""
    return source_hash(project_dir, (step, *SHARED_SOURCES))


def step_key(step: str, code: str, parameters: dict[str, str], inputs: dict[str, str]) -> str:
    """The cache key of one step run: code, parameters (run ids excluded by the caller) and input keys."""
    material = {"step": step, "code": code, "parameters": parameters, "inputs": inputs}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:32]


def find_cached_run(experiment_id: str, step: str, key: str) -> Run | None:
    """The newest FINISHED run of `step` in the experiment with this key, if any."""
    runs = mlflow.search_runs(
        experiment_ids=[experiment_id],
        filter_string=(
            f"tags.`{STEP_TAG}` = '{step}' and tags.`{CACHE_KEY_TAG}` = '{key}' "
            "and attributes.status = 'FINISHED'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    return runs[0] if runs else None


def mark(run_id: str, key: str) -> None:
    """Record a finished run's key, so a later pipeline can reuse it."""
    mlflow.MlflowClient().set_tag(run_id, CACHE_KEY_TAG, key)
