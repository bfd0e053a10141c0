"""Every config's runlocal variant trains (the others are built and checked in
tests/unit/test_configs.py)."""

import pytest

from ig_captioner import train
from tests.conftest import CONFIG_NAMES, load_config_module

# Trained elsewhere: demo (tests/e2e/test_train.py), converted (its model is the demo's CLIP,
# trained in tests/e2e/test_inference.py; the converter replaces it) and lit_captioner (trained
# from a converted tower in tests/e2e/test_convert.py).
TRAINED_ELSEWHERE = ("demo", "converted", "lit_captioner")


@pytest.mark.parametrize("name", [n for n in CONFIG_NAMES if n not in TRAINED_ELSEWHERE])
def test_runlocal_variant_trains(name, data_dir, tmp_path):
  config = load_config_module(name).get_config("runlocal")
  config.data.data_dir = data_dir
  state = train.train(config, str(tmp_path))
  assert int(state.step) == config.total_steps
