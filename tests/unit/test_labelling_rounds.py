"""bench/labelling_rounds.py's own logic (its figures come from running it): the round loop with a fake
trainer, the two arms' draws, the pool cleaned of test rows, the paired interval."""

import sys

import numpy as np
import pandas as pd
import pytest

from sentclf.schema import LABEL_COLUMN, TEXT_COLUMN
from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "bench"))

import labelling_rounds  # noqa: E402


def test_each_arm_picks_new_pool_rows_every_round_and_retrains_on_all_it_has():
    fits, seen = [], {arm: [] for arm in labelling_rounds.ARMS}

    def fit(rows):
        fits.append(sorted(rows.tolist()))
        return frozenset(rows.tolist())

    def score(model):
        return np.array([len(model) % 2 == 0, True])

    def pick(arm, model, available, count):
        assert model == frozenset(np.concatenate(seen[arm]).tolist() if seen[arm] else [])
        rows = available[:count] if arm == "chosen" else available[-count:]
        seen[arm].append(rows)
        return rows

    results = labelling_rounds.run_rounds(20, 3, 4, fit, score, pick, report=lambda *args: None)
    assert fits[0] == [] and len(fits) == 1 + 3 * 2  # round 0 once, shared by both arms
    for arm, picks in seen.items():
        flat = np.concatenate(picks)
        assert len(flat) == len(set(flat.tolist())) == 12  # never the same pool row twice
        assert len(results[arm]) == 4 and results[arm][0] is results["random"][0]
    assert fits[-2:] == [list(range(12)), list(range(8, 20))]  # the start plus every row picked so far


def test_the_draws_take_only_available_rows_and_refuse_more_than_the_pool():
    rng = np.random.default_rng(0)
    available = np.array([1, 3, 5, 7, 9])
    drawn = labelling_rounds.draw_random(available, 3, rng)
    assert set(drawn) <= set(available) and len(set(drawn)) == 3
    probabilities = np.full((10, 2), 0.5)
    probabilities[[1, 3]] = [0.99, 0.01]  # certain: picked last
    vectors = np.eye(10)
    chosen = labelling_rounds.draw_chosen(probabilities, vectors, available, 3, 0.5)
    assert set(chosen) == {5, 7, 9}
    with pytest.raises(ValueError, match="only 5 remain"):
        labelling_rounds.draw_random(available, 6, rng)
    with pytest.raises(ValueError, match="only 5 remain"):
        labelling_rounds.draw_chosen(probabilities, vectors, available, 6, 0.5)


def test_no_test_or_starting_sentence_stays_in_the_pool():
    pool = pd.DataFrame(
        {
            TEXT_COLUMN: ["What is  CPU ?", "Who won?", "Who won?", "Where is Rome?", "How far?"],
            LABEL_COLUMN: ["abbreviation", "human", "human", "location", "numeric"],
        }
    )
    kept = labelling_rounds.clean_pool(pool, ["what is cpu ?", "How far?"])
    assert kept[TEXT_COLUMN].tolist() == ["Who won?", "Where is Rome?"]


def test_the_paired_difference_and_its_interval():
    resamples = np.random.default_rng(0).integers(0, 200, size=(500, 200))
    a = np.arange(200) % 2 == 0
    assert labelling_rounds.paired_difference(a, a, resamples) == (0.0, 0.0, 0.0)
    b = a.copy()
    b[:20] = ~b[:20]  # b is wrong where a is right on 10 rows and right where a is wrong on 10
    b[20:40] = False  # and wrong on 10 more
    diff, low, high = labelling_rounds.paired_difference(a, b, resamples)
    assert diff == pytest.approx(0.05) and low < diff < high and low > -0.05
    accuracy, low, high = labelling_rounds.bootstrap_accuracy(a, resamples)
    assert accuracy == 0.5 and 0.4 < low < 0.5 < high < 0.6


def test_the_pair_budget_sets_the_iterations():
    assert labelling_rounds.pair_iterations(48, 640) == 6
    assert labelling_rounds.pair_iterations(198, 640) == 1
    assert labelling_rounds.pair_iterations(1000, 640) == 1
