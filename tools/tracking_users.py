"""Add a user to the tracking server's login (MLflow's basic-auth app) and grant a role, as its admin.

    python -m tools.tracking_users <name> --role reader|job   (make tracking-user TRACKING_USER=...)

The admin signs in with MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or _FILE); the new user's
password comes from TRACKING_USER_PASSWORD_FILE, or is asked for twice on a terminal: never an argument.

Roles:
  reader  browses every experiment, run and registered model (the server's default_permission, READ);
          cannot log runs, register versions or move aliases in them.
  job     what the pipeline and the nightly retrain need: EDIT on the experiment (MLFLOW_EXPERIMENT_NAME,
          created if missing) to log runs, and on the registered model (created if missing) to register
          versions and move `challenger` and `champion`.
Adding a user who exists already changes no password and only grants the role.
"""

import argparse
import getpass
import os
import sys

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.server import get_app_client

from conductor.tracking_credentials import load_password_file
from sentclf.contract import DEFAULT_MODEL_NAME

ROLES = ("reader", "job")
DEFAULT_MODEL = DEFAULT_MODEL_NAME


def new_password() -> str:
    path = os.environ.get("TRACKING_USER_PASSWORD_FILE")
    if path:
        with open(path, encoding="utf-8") as handle:
            password = handle.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = getpass.getpass("new user's password: ")
        if getpass.getpass("again: ") != password:
            raise SystemExit("the two passwords differ")
    else:
        raise SystemExit("set TRACKING_USER_PASSWORD_FILE to a file holding the new user's password")
    if len(password) < 12:
        raise SystemExit("the password must have at least 12 characters")
    return password


def add_user(tracking_uri: str, name: str, role: str, experiment: str, model: str) -> None:
    auth = get_app_client("basic-auth", tracking_uri=tracking_uri)
    try:
        auth.get_user(name)
        print(f"user {name} exists: its password is unchanged")
    except MlflowException:
        auth.create_user(name, new_password())
        print(f"created user {name}")
    if role == "reader":
        print(f"{name} reads every experiment, run and registered model (default_permission READ)")
        return
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    try:
        client.get_registered_model(model)
    except MlflowException:
        client.create_registered_model(model)
    for resource_type, resource_id in (("experiment", experiment_id), ("registered_model", model)):
        try:
            auth.grant_user_permission(name, resource_type, resource_id, "EDIT")
        except MlflowException as error:  # granted before: set it again
            if "already" not in str(error).lower() and "exists" not in str(error).lower():
                raise
    print(f"{name} may log runs in experiment {experiment!r} and register and promote {model!r}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("--role", choices=ROLES, required=True)
    parser.add_argument("--experiment", default=os.environ.get("MLFLOW_EXPERIMENT_NAME") or "cola-pipeline")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    args = parser.parse_args(argv)
    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if not tracking_uri.startswith(("http://", "https://")):
        raise SystemExit("set MLFLOW_TRACKING_URI to the tracking server (https://<host>:<port>)")
    load_password_file()
    if not os.environ.get("MLFLOW_TRACKING_USERNAME"):
        raise SystemExit("sign in as the admin: MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD_FILE")
    add_user(tracking_uri, args.name, args.role, args.experiment, args.model)


if __name__ == "__main__":
    main()
