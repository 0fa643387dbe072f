"""Command line for what the conductor does not do itself: inspect a step's Job manifests, run one step
alone through MLflow's backend, clean up a pipeline's Jobs. Run it as `python -m conductor.kube ...` from
the repository root, with the same SENTCLF_* variables as the pipeline. (A version's serving manifests:
`python -m tools.serving_manifests`.)
"""

import argparse
import json
import sys
from pathlib import Path

import yaml

from conductor.kube.backend import KubernetesBackend, backend_config, write_mlflow_template
from conductor.kube.jobs import JobClient, JobFailed
from conductor.kube.manifests import LABEL_PIPELINE, MLFLOW_STEPS, STEPS, ManifestError
from conductor.kube.settings import KubeSettings, KubeSettingsError, TrackingUriError
from sentclf.tracking import configure_logging

PROJECT_DIR = Path(__file__).resolve().parents[2]
# What a person can fix (a setting, a parameter, the cluster's context): one line each, not a traceback.
USER_ERRORS = (KubeSettingsError, TrackingUriError, ManifestError, JobFailed)


def parameter(text: str) -> tuple[str, str]:
    """`-P NAME=VALUE`, as `mlflow run` takes it."""
    name, equals, value = text.partition("=")
    if not name or not equals:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE (e.g. -P epochs=1)")
    return name, value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m conductor.kube", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    config = commands.add_parser("backend-config", help="write MLflow's backend config and Job template")
    config.add_argument("step", choices=MLFLOW_STEPS)
    config.add_argument("out_dir", type=Path)

    render = commands.add_parser("render", help="print the Job manifests of one step as YAML")
    render.add_argument("step", choices=STEPS)
    render.add_argument("--run-id", default="0" * 32)
    render.add_argument("--experiment-id", default="0")
    render.add_argument(
        "-P", dest="params", action="append", default=[], type=parameter, metavar="NAME=VALUE"
    )

    delete = commands.add_parser("delete", help="delete every Job (and pod) of one pipeline")
    delete.add_argument("pipeline_run_id")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    args = parse_args(argv)
    try:
        run(args)
    except USER_ERRORS as error:
        print(f"python -m conductor.kube {args.command}: {error}", file=sys.stderr)
        return 2
    return 0


def run(args: argparse.Namespace) -> None:
    settings = KubeSettings.from_env()
    if args.command == "backend-config":
        args.out_dir.mkdir(parents=True, exist_ok=True)
        template = write_mlflow_template(settings, args.step, None, args.out_dir / f"{args.step}-job.yaml")
        config_path = args.out_dir / f"{args.step}-backend-config.json"
        config_path.write_text(json.dumps(backend_config(settings, args.step, template.resolve()), indent=2))
        print(f"mlflow run {args.step} --backend kubernetes --backend-config {config_path} --build-image")
    elif args.command == "render":
        parameters = dict(args.params)
        backend = KubernetesBackend(PROJECT_DIR, settings)
        docs = backend.render_step(args.step, parameters, args.run_id, args.experiment_id)
        yaml.safe_dump_all(docs, sys.stdout, sort_keys=False)
    else:
        JobClient.connect(settings.kube_context, settings.namespace).delete_labelled(
            f"{LABEL_PIPELINE}={args.pipeline_run_id}"
        )


if __name__ == "__main__":
    sys.exit(main())
