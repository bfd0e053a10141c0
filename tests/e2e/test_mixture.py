"""A prefix-conditioned model trained on a mixture is evaluated with each test prefix."""


from ig_captioner import evaluate
from ig_captioner import token_ids
from ig_captioner import train
from tests.conftest import load_config_module
from tests.e2e.test_evaluate import zeroshot_names

CAPTION, CLASSIFICATION = (token_ids.PREFIX_IDS[k] for k in ("caption", "classification"))


def _prefix_config(data_dir, weights=(0.75, 0.25)):
  config = load_config_module("prefix").get_config("runlocal,prefix")
  config.data.data_dir = data_dir
  config.data.mixture.captions.weight, config.data.mixture.labels.weight = weights
  return config


def test_prefix_conditioned_model_is_evaluated_with_each_prefix(data_dir, tmp_path):
  config = _prefix_config(data_dir, weights=(0.5, 0.5))
  train.train(config, str(tmp_path))
  metrics = evaluate.evaluate(config, str(tmp_path), step=6)[6]
  assert set(metrics) == {name for ds in ("digits", "digits_inverted")
                          for p in ("", "/caption_prefix", "/classification_prefix")
                          for name in zeroshot_names(ds, stem=p)}
