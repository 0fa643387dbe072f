"""The what-if page explains single sentences: a sentence-pair version is refused with a message that
says where pairs are asked instead, and a single-sentence one passes."""

import pytest

from sentclf_runtime.config import ServingConfig
from sentclf_runtime.pairs import with_pair_input
from tests.server.conftest import make_model_dir
from tools.explore import check_single_sentences


def test_a_pairs_version_is_refused_with_a_message(tmp_path) -> None:
    single = make_model_dir(tmp_path / "single")
    check_single_sentences(single, "models:/single/1")
    pairs = make_model_dir(tmp_path / "pairs")
    with_pair_input(ServingConfig.read(pairs)).write(pairs)
    with pytest.raises(SystemExit, match="reads sentence pairs.*docs/pairs.md"):
        check_single_sentences(pairs, "models:/pairs/1")
