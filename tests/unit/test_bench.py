"""The benchmark scripts' own logic (their figures come from running them, not from tests)."""

import sys

import numpy as np
import pytest

from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "bench"))

import recipe_sweep  # noqa: E402

import quantization  # noqa: E402


def test_recipe_sweep_types_the_mlproject_defaults():
    """YAML reads `2e-4` (no dot) as a string: an empty recipe must still train at a float rate."""
    defaults = recipe_sweep.mlproject_defaults(REPO_ROOT / "train" / "MLproject")
    recipe = recipe_sweep.parse_recipe("", defaults)
    assert isinstance(recipe["learning_rate"], float) and recipe["learning_rate"] > 0
    assert isinstance(recipe["tune_threshold"], bool)
    assert recipe_sweep.parse_recipe("lr=1e-4,seed=7", defaults)["learning_rate"] == pytest.approx(1e-4)


def test_recipe_sweep_rejects_an_unknown_key():
    defaults = recipe_sweep.mlproject_defaults(REPO_ROOT / "train" / "MLproject")
    with pytest.raises(SystemExit, match="unknown recipe key 'learning_rate'"):
        recipe_sweep.parse_recipe("learning_rate=1e-4", defaults)


def test_quantization_tunes_the_shift_that_maximises_mcc_and_keeps_none_when_none_helps():
    labels = np.array([0, 0, 0, 1, 1, 1])
    margins = np.array([-3.0, -2.0, 1.0, 1.5, 2.0, 3.0])  # the third row is wrong at shift 0
    logits = np.stack([np.zeros_like(margins), margins], axis=1)
    shift = quantization.tuned_shift(labels, logits)
    assert -1.5 < shift < -1.0
    assert quantization.mcc(labels, logits, shift) == pytest.approx(1.0)
    separable = np.stack([np.zeros(6), np.array([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0])], axis=1)
    assert quantization.tuned_shift(labels, separable) == 0.0


def _scores(val_mcc, val_tuned, tput, predictions):
    return {
        "size_mb": 1.0,
        "val_mcc": val_mcc,
        "test_mcc": 0.3,
        "val_mcc_tuned": val_tuned,
        "test_mcc_tuned": 0.3,
        "tput": tput,
        "val_predictions": predictions,
    }


def test_quantization_meets_the_target_only_within_001_both_ways_and_15x(capsys):
    labels = np.array([0, 1] * 20)
    same = labels.copy()
    scores = {
        "fp32": _scores(0.40, 0.40, 100.0, same),
        "fast_but_loses_when_retuned": _scores(0.395, 0.38, 200.0, same),
        "fast_but_loses_at_fp32s_threshold": _scores(0.38, 0.40, 200.0, same),
        "accurate_but_slow": _scores(0.40, 0.40, 140.0, same),
    }
    quantization.report(scores, [], labels)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert "meets_target=false" in last
    scores = {name: {k: v for k, v in s.items() if k in _scores(0, 0, 0, 0)} for name, s in scores.items()}
    scores["good"] = _scores(0.395, 0.392, 160.0, same)
    quantization.report(scores, [], labels)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("best=good ") and "meets_target=true" in last and "speedup=1.60" in last
