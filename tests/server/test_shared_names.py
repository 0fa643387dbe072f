"""The tensor names the server answers with are the clients' and the pipeline's: one set, the runtime's."""

import json

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


def test_the_capture_records_fields_are_the_contracts():
    """The server writes each captured record's fields by name (it imports nothing of the project); the
    monitor and the live loop read them through the contract's names."""
    from types import SimpleNamespace

    import numpy as np

    from sentclf import contract
    from sentclf_server.capture import Capture

    writer = SimpleNamespace(
        max_chars=100, model_name="cola", model_version="3", labels=("no", "yes"), settings=SimpleNamespace()
    )
    writer.settings.store_text = False
    (line,) = Capture._records(writer, None, 0.0, ["a sentence"], np.array([[0.2, 0.8]]))
    record = json.loads(line)
    assert record[contract.MODEL_FIELD] == "cola" and record[contract.VERSION_FIELD] == "3"
    assert record[contract.PREDICTED_FIELD] == 1
