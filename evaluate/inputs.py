"""What the evaluate step measures when it is given only a model version (or nothing at all): the
version itself (a number or an alias such as `challenger`), the server image the building step recorded
on it and the model name that image answers to, the test data of its own lineage, and that data's label
set (which must be the version's). `mlflow run evaluate -P model_version=3` needs no more."""

import logging
from dataclasses import dataclass

import mlflow
from mlflow.exceptions import MlflowException

from sentclf.contract import LABEL_NAMES_TAG, SERVER_IMAGE_TAG
from sentclf.data import read_label_set
from sentclf.schema import LabelSet, label_names_from_tag
from sentclf.server_images import LEGACY_SERVED_NAME, recorded_served_name
from sentclf.tracking import StepInputError, get_finished_run, newest_successful_run, version_data_run_id

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluationInputs:
    model_name: str
    version: str
    server_image: str
    data_run_id: str
    served_name: str = LEGACY_SERVED_NAME


def resolve_version(model_name: str, version_or_alias: str) -> str:
    """The version number `version_or_alias` names in `model_name`."""
    client = mlflow.MlflowClient()
    try:
        if version_or_alias.isdigit():
            return str(client.get_model_version(model_name, version_or_alias).version)
        return str(client.get_model_version_by_alias(model_name, version_or_alias).version)
    except MlflowException as error:
        raise StepInputError(
            f"model_version {version_or_alias!r}: no such version or alias of {model_name!r} "
            f"({error.message.splitlines()[0]}). Pass a registered version number (-P model_version=3) or "
            "an alias (challenger, champion); `mlflow run train` registers a new one."
        ) from None


def resolve_server_image(model_name: str, version: str, given: str) -> str:
    if given:
        return given
    image = mlflow.MlflowClient().get_model_version(model_name, version).tags.get(SERVER_IMAGE_TAG)
    if not image:
        raise StepInputError(
            f"{model_name} version {version} has no server image yet: build it with `mlflow run building "
            f"-P model_uri=models:/{model_name}/{version}`, or pass -P server_image=<image>"
        )
    return image


def resolve_served_name(model_name: str, version: str, given: str) -> str:
    """The given name, else the one the version's image answers to."""
    return given or recorded_served_name(mlflow.MlflowClient().get_model_version(model_name, version).tags)


def resolve_data_run(model_name: str, version: str, given: str) -> str:
    """The given preprocess run, else the one the version was trained on, else the newest one."""
    if given:
        return get_finished_run(given, "preprocess").info.run_id
    lineage = version_data_run_id(model_name, version)
    if lineage:
        try:
            return get_finished_run(lineage, "preprocess").info.run_id
        except StepInputError as error:
            logger.warning("the version's own data run is unusable (%s): using the newest one", error)
    run = newest_successful_run("preprocess")
    logger.info("using the newest successful preprocess run %s", run.info.run_id)
    return run.info.run_id


def resolve_inputs(
    model_name: str, model_version: str, server_image: str, data_run_id: str, served_name: str = ""
) -> EvaluationInputs:
    version = resolve_version(model_name, model_version)
    return EvaluationInputs(
        model_name=model_name,
        version=version,
        server_image=resolve_server_image(model_name, version, server_image),
        data_run_id=resolve_data_run(model_name, version, data_run_id),
        served_name=resolve_served_name(model_name, version, served_name),
    )


def resolve_label_set(model_name: str, version: str, data_run_id: str) -> LabelSet:
    """The classes of the test data (its preprocess run's label set), checked against the classes the
    version was trained on (its `label_names` tag). A version from before label sets were data has no
    tag; the width of its answers is checked against the label set once it has answered."""
    data = read_label_set(data_run_id)
    tag = mlflow.MlflowClient().get_model_version(model_name, version).tags.get(LABEL_NAMES_TAG)
    if tag is None:
        return data
    try:
        trained = label_names_from_tag(tag)
    except ValueError as error:
        raise StepInputError(f"{model_name} version {version}: {error}") from None
    if trained != data.names:
        lineage = version_data_run_id(model_name, version)
        own = (
            f"-P data_run_id={lineage} (the data it was trained on)" if lineage else "-P data_run_id=<a run>"
        )
        raise StepInputError(
            f"{model_name} version {version} was trained on the classes {list(trained)} (its tag "
            f"{LABEL_NAMES_TAG}), but the test data of preprocess run {data_run_id} has the classes "
            f"{list(data.names)}: its answers would be scored against other labels. Evaluate it on data "
            f"with its own label set, {own}, or train a version on this data first "
            "(`mlflow run train -P data_run_id=...`). Nothing was promoted."
        )
    return data
