"""The runtime's multi-label parts (sentclf_runtime.multilabel, ServingConfig's label_mode and thresholds):
a single-label config reads and writes exactly as before, a multi-label one round-trips its thresholds,
bad thresholds are refused with the file named, and the sigmoid and label sets are what they say."""

import json

import numpy as np
import pytest

from sentclf_runtime.config import ConfigError, ServingConfig
from sentclf_runtime.multilabel import label_set_json, label_sets, sigmoid
from sentclf_runtime.outputs import OUTPUT_NAMES, output_metadata, output_names

LABELS = ["billing", "login", "refund"]


def test_a_single_label_config_is_written_as_before():
    data = {"labels": LABELS, "max_seq_length": 64, "model_name": "tickets", "input_names": ["input_ids"]}
    config = ServingConfig.from_dict(data)
    assert not config.multi_label and config.label_mode == "single"
    assert config.to_dict() == data | {"labels": LABELS}
    assert "label_mode" not in json.dumps(config.to_dict())
    assert output_names(config.multi_label) == OUTPUT_NAMES
    assert output_metadata(3) == output_metadata(3, False)


def test_a_multi_label_config_round_trips_its_thresholds(tmp_path):
    config = ServingConfig.from_dict({"labels": LABELS, "label_mode": "multi", "thresholds": [0.3, 0.5, 0.7]})
    path = config.write(tmp_path)
    again = ServingConfig.read(path)
    assert again.multi_label and again.label_thresholds() == (0.3, 0.5, 0.7)
    assert again == config and "label_mode" not in again.extra
    assert output_metadata(3, True)[-1] == ("label_set", "BYTES", [-1])
    untuned = ServingConfig.from_dict({"labels": LABELS, "label_mode": "multi"})
    assert untuned.label_thresholds() == (0.5, 0.5, 0.5)


@pytest.mark.parametrize(
    "extra",
    [
        {"label_mode": "several"},
        {"label_mode": "multi", "thresholds": [0.5, 0.5]},
        {"label_mode": "multi", "thresholds": [0.5, 1.0, 0.5]},
        {"label_mode": "multi", "thresholds": "0.5"},
    ],
)
def test_bad_modes_and_thresholds_name_the_file(extra):
    with pytest.raises(ConfigError, match="serving_config.json"):
        ServingConfig.from_dict({"labels": LABELS, **extra})


def test_sigmoid_is_stable_and_label_sets_follow_the_thresholds():
    probs = sigmoid(np.array([[-1000.0, 0.0, 1000.0], [2.0, -2.0, 0.1]]))
    assert probs.dtype == np.float32 and np.isfinite(probs).all()
    np.testing.assert_allclose(probs[0], [0.0, 0.5, 1.0])
    assert label_sets(probs, LABELS, (0.5, 0.5, 0.9)) == [["login", "refund"], ["billing"]]
    assert label_sets(probs, LABELS, (0.99, 0.99, 0.99)) == [["refund"], []]
    assert json.loads(label_set_json(["billing", "réfund"])) == ["billing", "réfund"]
