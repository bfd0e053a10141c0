"""Every config builds; its runlocal variant runs; the paper config builds abstractly at scale."""

import jax
import numpy as np
import pytest

from ig_captioner import experiment
from ig_captioner import cli
from ig_captioner import errors
from ig_captioner import models
from ig_captioner import objectives
from ig_captioner import optimizer as optimizer_lib
from ig_captioner import sharding
from ig_captioner.tools import sweep
from ig_captioner import train_state
from tests.conftest import CONFIG_NAMES, load_config_module



FAMILIES = ("captioner", "clip", "siglip", "coca", "cappa")


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_config_and_sweep_are_valid(name):
  module = load_config_module(name)
  try:
    families = [f"family={f}" for f in FAMILIES]
    module.get_config(families[0])
  except errors.ConfigError:  # A config of one family (configs/ig_study.py).
    families = [""]
  args = ("", "runlocal,")
  if hasattr(module, "NEEDS_ARG"):  # e.g. configs/lit_captioner.py: init_from=DIR.
    with pytest.raises(errors.ConfigError, match=f"needs {module.NEEDS_ARG}="):
      module.get_config(None)
    args = ("runlocal,",)
  for arg in args:
    for family in families:
      experiment.validate(module.get_config(f"{arg}{family}".rstrip(",") or None))
  if not hasattr(module, "sweep"):  # configs/converted.py: a base for converted runs.
    with pytest.raises(errors.ConfigError, match="defines no sweep"):
      sweep.sweep_runs(module)
    return
  runs = sweep.sweep_runs(module)
  assert len({run.directory for run in runs}) == len(runs)
  for run in runs:  # Every override names an existing field: checked on a *locked* config.
    config = module.get_config(run.arg or None)
    config.lock()
    for field, value in run.overrides.items():
      assert cli.unknown_field(config, field) is None, (run, field)
      config.update_from_flattened_dict({field: value})
    experiment.validate(config)


def test_demo_sweep_is_the_papers_comparison():
  module = load_config_module("demo")
  setups = []
  for run in sweep.sweep_runs(module):
    config = module.get_config(run.arg)
    config.update_from_flattened_dict(run.overrides)
    setups.append((run.label, config.model.name, config.objective.name,
                   config.objective.get("text_only_weight")))
    # The same image tower, data, steps and batch for every model.
    assert (config.model.encoder, config.model.image_size, config.total_steps,
            config.batch_size, config.data.name) == ("mu/8", 32, 1200, 128, "digits_captions")
  assert setups == [("standard captioner", "captioner", "captioning", 0.0),
                    ("IG captioner", "captioner", "captioning", 1.0),
                    ("CLIP", "two_towers", "softmax_contrastive", None),
                    ("SigLIP", "two_towers", "sigmoid_contrastive", None),
                    ("CoCa", "coca", "contrastive_captioning", 0.0),
                    ("CapPa", "captioner", "cappa", 0.0)]


def test_unknown_config_argument_is_named():
  with pytest.raises(ValueError, match="unknown config argument 'fast'"):
    load_config_module("demo").get_config("fast")


def test_paper_config_builds_abstractly_on_a_mesh():
  config = load_config_module("ig_b16_laion").get_config()
  model = models.build(config.model)
  tx = optimizer_lib.build(config.optimizer, config.total_steps)
  mesh = sharding.make_mesh(config.mesh)
  assert dict(mesh.shape) == {"data": 1, "fsdp": 8, "tensor": 1}
  abstract, _ = train_state.abstract_state_and_shardings(model.init_params, tx, mesh)

  def count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))
  encoder, decoder = count(abstract.params["encoder"]), count(abstract.params["decoder"])
  # ViT-B/16 at 224: 12 blocks of 7.08M, patch embedding 0.59M, positions 0.15M: ~85.8M.
  assert 85.5e6 < encoder < 86.2e6, encoder
  # 6 blocks of (2 attentions 2.36M each + MLP 4.72M) + 2 x 32k x 768 embeddings: ~105.9M.
  assert 105e6 < decoder < 106.5e6, decoder
  kernel = abstract.params["encoder"]["block0"]["mlp"]["fc1"]["kernel"]
  assert kernel.shape == (768, 3072)
  assert kernel.sharding.shard_shape(kernel.shape) == (96, 3072)  # Split 8 ways by fsdp.
  # The whole train step traces at full scale (no compile, no memory).
  batch = {"image": jax.ShapeDtypeStruct((config.batch_size, 224, 224, 3), np.float32),
           "tokens": jax.ShapeDtypeStruct((config.batch_size, 64), np.int32),
           "target_mask": jax.ShapeDtypeStruct((config.batch_size, 63), np.bool_)}
  schedule = optimizer_lib.learning_rate_schedule(config.optimizer, config.total_steps)
  step = experiment.make_train_step(objectives.make_loss(config, model.predict_fns), tx,
                                    schedule, seed=0)
  with sharding.activate(mesh):
    new_state, metrics = jax.eval_shape(step, abstract, batch)
  assert set(metrics) >= {"loss", "ce_with_image", "ce_text_only", "info_gain_per_token"}
  assert jax.tree.map(lambda x: x.shape, new_state.params) == jax.tree.map(lambda x: x.shape,
                                                                           abstract.params)


def test_command_line_overrides_are_checked_before_parsing():
  config = load_config_module("demo").get_config("runlocal")
  argv = ["train", "--config=configs/demo.py", "--config.keep_checkpoints=None",
          "--config.optimizer.learning_rate=1e-3", "--workdir=/tmp/x"]
  kept, to_none = cli.split_overrides(argv, config)
  assert to_none == ["keep_checkpoints"] and "--config.keep_checkpoints=None" not in kept
  with pytest.raises(errors.ConfigError, match=r"--config.optimizer.lr=1: config.optimizer "
                                               r"has no field 'lr'; its fields are: b1, .*rate"):
    cli.split_overrides(["--config.optimizer.lr=1"], config)
  with pytest.raises(errors.ConfigError, match=r"config.total_steps is a value \(6\)"):
    cli.split_overrides(["--config.total_steps.x=1"], config)
  with pytest.raises(errors.ConfigError, match="Did you mean config.batch_size"):
    cli.split_overrides(["--config.batchsize=8"], config)


def test_keep_checkpoints_none_is_valid_and_zero_is_not():
  config = load_config_module("demo").get_config("runlocal")
  config.keep_checkpoints = None
  experiment.validate(config)
  config.keep_checkpoints = 0
  with pytest.raises(errors.ConfigError, match=r"keep_checkpoints=0 .* or None to keep all"):
    experiment.validate(config)


@pytest.mark.parametrize("family", ["coca", "cappa"])
def test_paper_baselines_train_with_their_papers_losses(family):
  module = load_config_module("ig_b16_laion")
  for arg in (f"family={family}", f"runlocal,family={family}"):
    assert module.get_config(arg).objective.text_only_weight == 0.0, arg
    assert module.get_config(f"{arg},ig").objective.text_only_weight == 1.0, arg
  assert module.get_config().objective.text_only_weight == 1.0  # The IG captioner.


@pytest.mark.parametrize("family", ["captioner", "clip", "siglip"])
def test_ig_argument_is_refused_where_it_means_nothing(family):
  with pytest.raises(errors.ConfigError, match=f"ig is for family=coca or cappa.*{family}"):
    load_config_module("ig_b16_laion").get_config(f"family={family},ig")


def test_no_name_means_two_plugins():
  from ig_captioner import registry
  packages = {"ig_captioner.models": "build", "ig_captioner.objectives": "make_loss",
              "ig_captioner.evaluators": "Evaluator"}
  names = {package: set(registry.members(package, marker))
           for package, marker in packages.items()}
  assert all(len(members) >= 3 for members in names.values()), names
  for a in names:
    for b in names:
      assert a == b or not names[a] & names[b], (a, b, names[a] & names[b])


def test_renamed_plugins_name_their_new_name():
  from ig_captioner import evaluators
  with pytest.raises(errors.ConfigError,
                     match="config.objective.name='coca' was renamed: set .*"
                           "'contrastive_captioning'"):
    objectives.get("coca")
  with pytest.raises(errors.ConfigError, match="'captioning' was renamed: .*'caption_generation'"):
    evaluators.get("captioning", "config.evals.x.type")


def test_sweep_hooks_refuse_a_name_the_sweep_does_not_read():
  import types
  from ig_captioner.tools import sweep_hooks
  module = types.ModuleType("config")
  module.sweep = lambda add: add(label="x")
  hooks = sweep_hooks.of(module, "configs/x.py")
  assert (hooks.sweep, hooks.tables, hooks.evaluate_every_checkpoint) == (module.sweep, None,
                                                                          False)
  module.sweep_table = lambda: ([], ())  # A typo of sweep_tables.
  with pytest.raises(errors.ConfigError, match=r"configs/x.py defines \['sweep_table'\], which "
                                               "the sweep does not read"):
    sweep_hooks.of(module, "configs/x.py")
  del module.sweep_table, module.sweep
  with pytest.raises(errors.ConfigError, match="defines no sweep"):
    sweep_hooks.of(module, "configs/x.py")
