"""Entry point of the root MLproject (`mlflow run .`): read the pipeline's parameters, run the pipeline.

The parameters and their defaults are the root MLproject's (conductor.parameters reads them); the pipeline
itself is conductor.pipeline: preprocess -> train -> building -> evaluate, each a child run.
"""

import argparse
import logging
import signal
import sys

from conductor.backends import resolve_backend_name
from conductor.outcome import CANCELLED, kind_of, write_outcome
from conductor.parameters import root_parameters
from conductor.pipeline import run_pipeline
from sentclf.cli import parse_bool
from sentclf.tracking import StepCancelled, configure_logging, raise_cancelled
from sentclf.unlabelled_text import NO_UNLABELLED

logger = logging.getLogger("main")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Every root parameter, required: MLflow passes each one, with the MLproject's default if not given."""
    parser = argparse.ArgumentParser(description=__doc__)
    for name in root_parameters():
        parser.add_argument(f"--{name.replace('_', '-')}", required=True)
    args = parser.parse_args(argv)
    args.use_cache = parse_bool(args.use_cache)
    try:
        args.backend = resolve_backend_name(args.backend)
    except ValueError as error:
        parser.error(str(error))
    if args.unlabelled != NO_UNLABELLED and args.teacher == "none":
        parser.error(
            f"unlabelled={args.unlabelled}: unlabelled text is labelled by a teacher for the student; add "
            "-P teacher=mpnet (docs/teacher.md), or leave unlabelled=none"
        )
    if args.unlabelled != NO_UNLABELLED and args.backend == "kubernetes":
        parser.error(
            "unlabelled: preprocess reads it from this machine's files, which a Kubernetes pod does not "
            "see; run with backend=local, or leave unlabelled=none"
        )
    if int(args.keep_images) < 1:
        parser.error(
            f"keep_images must be >= 1 (the newest versions whose images stay), got {args.keep_images}"
        )
    return args


def fail(error: BaseException) -> None:
    """The summary line and the failure's kind (conductor.outcome), for scripts/retrain.sh."""
    first = (str(error).splitlines() or [type(error).__name__])[0]
    write_outcome(f"failed: {first}", "failed", kind=kind_of(error), step=getattr(error, "step", None))


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    signal.signal(signal.SIGTERM, raise_cancelled)
    args = parse_args(argv)
    try:
        run_pipeline(args)
    # StepFailed, ImageError, no engine, Kubernetes settings or failures: the message says it all.
    except (RuntimeError, ValueError) as error:
        logger.error("%s", error)
        fail(error)
        return 1
    except (StepCancelled, KeyboardInterrupt) as cancel:
        logger.error(
            "cancelled (%s): the running step was stopped, its runs end KILLED", str(cancel) or "Ctrl-C"
        )
        write_outcome("cancelled", CANCELLED, kind=CANCELLED, step=getattr(cancel, "step", None))
        return 143
    except Exception as error:  # anything else (the store, the engine's client): with its traceback
        logger.exception("the pipeline failed")
        fail(error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
