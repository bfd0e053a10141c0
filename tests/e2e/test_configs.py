"""Every config's runlocal variant trains (the others are built and checked in
tests/unit/test_configs.py)."""

import pytest

from ig_captioner import train
from tests.conftest import CONFIG_NAMES, load_config_module



@pytest.mark.parametrize("name", [n for n in CONFIG_NAMES if n != "demo"])  # demo: test_train.
def test_runlocal_variant_trains(name, data_dir, tmp_path):
  config = load_config_module(name).get_config("runlocal")
  config.data.data_dir = data_dir
  state = train.train(config, str(tmp_path))
  assert int(state.step) == config.total_steps
