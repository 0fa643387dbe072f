"""The slim server image cannot import `sentclf`, so it keeps its own copies of the names the steps and
clients use: pinned here to the shared package's."""

from sentclf import kserve_client, schema
from sentclf_server import outputs, service


def test_the_servers_tensor_names_are_the_clients():
    assert service.INPUT_NAME == kserve_client.TEXT_INPUT
    assert outputs.LABEL_OUTPUT == kserve_client.LABEL_OUTPUT
    assert outputs.PROBS_OUTPUT == kserve_client.PROBABILITIES_OUTPUT
    assert outputs.LABEL_NAME_OUTPUT == kserve_client.LABEL_NAME_OUTPUT


def test_the_class_names_parameter_is_the_label_names_tag():
    assert outputs.LABEL_NAMES_PARAMETER == schema.LABEL_NAMES_TAG
