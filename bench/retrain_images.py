"""Images over a season of nightly retraining: `scripts/retrain.sh` N times in a row on a tiny
configuration (a store of its own, the cache off so that each run trains, builds and evaluates a new
version), and after each, the server images this store owns (count and bytes), every image on the engine,
and the dangling ones. With garbage collection the store's images stay bounded at the champion, the
challenger and the newest `keep_images`; without it they grow by one per night.

The last line reads `retrains=<n> store_images=<count> store_mb=<MB> dangling=<count> growing=<true|false>`.
Usage: python bench/retrain_images.py [--retrains 10] [--keep-images 3]
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import docker
import mlflow

REPO_ROOT = Path(__file__).resolve().parent.parent
TINY = ["-P", "epochs=1", "-P", "max_train_samples=64", "-P", "use_cache=false"]


def store_images(engine: docker.DockerClient, client: mlflow.MlflowClient, model: str) -> list:
    namespace = client.get_registered_model(model).tags.get("sentclf.image_namespace")
    return engine.images.list(filters={"label": f"sentclf.image_namespace={namespace}"}) if namespace else []


def retrain(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """One `scripts/retrain.sh` in a process group of its own; if this bench is interrupted, the retrain
    gets SIGTERM (its pipeline cancels cleanly) and is waited for before the store is removed."""
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        stdout, _ = process.communicate()
    except BaseException:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=300)
        raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, "")


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up as on Ctrl-C
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--retrains", type=int, default=10)
    parser.add_argument("--keep-images", type=int, default=3)
    args = parser.parse_args()
    engine = docker.from_env()
    tag = uuid.uuid4().hex[:8]
    root = Path(tempfile.mkdtemp(prefix="sentclf-bench-retrain-"))
    uri, experiment, model = f"sqlite:///{root}/mlflow.db", f"bench-retrain-{tag}", f"bench-{tag}"
    artifacts = REPO_ROOT / "mlruns" / experiment
    client = mlflow.MlflowClient(tracking_uri=uri)
    client.create_experiment(experiment, artifact_location=str(artifacts))
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_EXPERIMENT_NAME": experiment,
        "RETRAIN_LOG_DIR": str(root / "logs"),
    }
    rows = []
    try:
        print("night exit seconds store_images store_MB all_images dangling")
        for night in range(1, args.retrains + 1):
            started = time.monotonic()
            command = ["scripts/retrain.sh", *TINY, "-P", f"registered_model_name={model}"]
            command += ["-P", f"keep_images={args.keep_images}"]
            result = retrain(command, env)
            seconds = time.monotonic() - started
            mine = store_images(engine, client, model)
            row = (
                night,
                result.returncode,
                seconds,
                len(mine),
                sum(image.attrs["Size"] for image in mine) / 1e6,
                len(engine.images.list()),
                len(engine.images.list(filters={"dangling": True})),
            )
            rows.append(row)
            print("{:>5} {:>4} {:>7.0f} {:>12} {:>8.0f} {:>10} {:>8}".format(*row), flush=True)
            if result.returncode:
                print(result.stdout[-3000:], file=sys.stderr)
                return 1
    finally:
        for image in store_images(engine, client, model):
            for image_tag in image.tags:
                engine.images.remove(image_tag, force=True)
        shutil.rmtree(artifacts, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
    growing = rows[-1][3] > args.keep_images + 2 or rows[-1][6] > rows[0][6]
    print(
        f"retrains={len(rows)} store_images={rows[-1][3]} store_mb={rows[-1][4]:.0f} dangling={rows[-1][6]} "
        f"growing={str(growing).lower()}"
    )
    return 1 if growing else 0


if __name__ == "__main__":
    sys.exit(main())
