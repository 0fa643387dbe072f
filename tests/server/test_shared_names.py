"""The tensor names the server answers with are the clients' and the pipeline's: one set, the runtime's."""

from sentclf import kserve_client, schema
from sentclf_runtime import outputs as runtime
from sentclf_server import dataplane, http_codec, outputs


def test_the_servers_tensor_names_are_the_clients():
    assert dataplane.INPUT_NAME == http_codec.INPUT_NAME == kserve_client.TEXT_INPUT == runtime.TEXT_INPUT
    assert outputs.LABEL_OUTPUT == kserve_client.LABEL_OUTPUT == runtime.LABEL_OUTPUT
    assert outputs.PROBS_OUTPUT == kserve_client.PROBABILITIES_OUTPUT == runtime.PROBS_OUTPUT
    assert outputs.LABEL_NAME_OUTPUT == kserve_client.LABEL_NAME_OUTPUT == runtime.LABEL_NAME_OUTPUT


def test_the_class_names_parameter_is_the_label_names_tag():
    assert outputs.LABEL_NAMES_PARAMETER == schema.LABEL_NAMES_TAG
