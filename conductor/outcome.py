"""What kind of failure ended a pipeline, for whoever runs it unattended (scripts/retrain.sh retries the
transient kinds and reports the rest).

The conductor writes its outcome to SENTCLF_SUMMARY_FILE when that is set: the first line is the human
summary (`version 7, test MCC ...`, `failed: ...`, `cancelled`), the second one JSON object:
`{"outcome": "promoted"|"kept"|"failed"|"cancelled", "kind": ..., "step": ..., "version": ..., "reused": n}`.
"""

import json
import os
from pathlib import Path

SUMMARY_FILE_ENV = "SENTCLF_SUMMARY_FILE"

# Transient: the same night started again a little later may well succeed.
ENGINE_UNREACHABLE = "engine_unreachable"  # the Docker engine did not answer
STORE_LOCKED = "store_locked"  # the tracking store was locked (sqlite's `database is locked`)
CONTAINER_KILLED = "container_killed"  # a step's container was killed from outside (docker kill/stop, OOM)
TRANSIENT = frozenset({ENGINE_UNREACHABLE, STORE_LOCKED, CONTAINER_KILLED})
# Permanent: the same night would fail the same way (bad data, a code error, a failing step).
STEP_FAILED = "step_failed"
ERROR = "error"
CANCELLED = "cancelled"

# `docker run` exits 128 + the signal that ended the container's process: 137 SIGKILL, 143 SIGTERM.
KILLED_FROM_OUTSIDE = (137, 143)


def kind_of(error: BaseException) -> str:
    """The kind of an exception that ended the pipeline."""
    if kind := getattr(error, "kind", None):
        return kind
    text = f"{type(error).__name__}: {error}"
    if "no Docker engine answers" in text or _is_engine_connection_error(error):
        return ENGINE_UNREACHABLE
    if "database is locked" in text:
        return STORE_LOCKED
    return ERROR


def _is_engine_connection_error(error: BaseException) -> bool:
    import docker.errors
    import requests.exceptions

    return isinstance(error, docker.errors.DockerException | requests.exceptions.ConnectionError) and (
        "Connection" in str(error) or "connection" in str(error)
    )


def write_outcome(summary: str, outcome: str, **facts: object) -> None:
    """The summary line and the machine-readable outcome, when someone asked for them."""
    if path := os.environ.get(SUMMARY_FILE_ENV):
        record = {"outcome": outcome} | {k: v for k, v in facts.items() if v is not None}
        Path(path).write_text(summary + "\n" + json.dumps(record) + "\n")
