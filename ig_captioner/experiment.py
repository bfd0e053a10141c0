"""One experiment assembled from its config, the same way for the trainer, the planner and the
benchmarks: the config checked (the trainer's fields here; the model family, the objective and
each evaluator check theirs), then on a mesh the model, the loss, the optimizer and its
schedule, the abstract train state with its shardings, and the jitted train step.

    exp = experiment.build(config, mesh)
    state = exp.init_state(jax.random.key(config.seed))
    step = exp.jit_train_step()                 # (state, batch) -> (state, metrics)
    step.lower(exp.abstract_state, exp.abstract_batch())   # what the planner compiles
"""

import dataclasses
import json
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from ig_captioner import errors
from ig_captioner import evaluators
from ig_captioner import models
from ig_captioner import objectives
from ig_captioner import optimizer as optimizer_lib
from ig_captioner import paths
from ig_captioner import profiling
from ig_captioner import sharding
from ig_captioner import step_flops
from ig_captioner import token_ids
from ig_captioner import train_state


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the field and the fix for values that cannot work: the trainer's
  own fields here; the model family, the objective and each evaluator check theirs."""
  def check(field, ok, need):
    value = config
    for part in field.split("."):
      value = value[part]
    try:
      valid = bool(ok(value))
    except TypeError:  # e.g. None where a number is needed.
      valid = False
    if not valid:
      raise errors.ConfigError(f"config.{field}={value!r} is invalid: {need}")

  positive = lambda v: v > 0  # pylint: disable=unnecessary-lambda-assignment
  check("total_steps", positive, "must be positive")
  check("batch_size", positive, "must be positive")
  check("log_every", positive, "must be positive")
  check("checkpoint_every", positive, "must be positive")
  check("keep_checkpoints", lambda v: v is None or v > 0,
        "must be positive, or None to keep all (--config.keep_checkpoints=None)")
  check("model.image_size", positive, "must be positive")
  check("model.vocab_size", lambda v: v > token_ids.NUM_SPECIAL_IDS,
        "must exceed the 4 special ids (pad, bos, eos, unk)")
  check("data.augment_shift", lambda v: v >= 0, "must be >= 0")
  profiling.validate(config)
  models.build(config.model)
  objectives.validate(config)
  accum = config.get("grad_accum_steps", 1)
  if accum != 1:
    check("grad_accum_steps", lambda v: isinstance(v, int) and v > 1 and
          config.batch_size % v == 0, "must be a positive integer dividing config.batch_size")
    why = objectives.accumulation_error(config)
    if why:
      raise errors.ConfigError(f"config.grad_accum_steps={accum} cannot give the full batch's "
                               f"update: {why}. Use a smaller batch or more devices instead")
  evaluators.validate(config)


def make_train_step(loss_fn, tx, schedule, seed: int, accum_steps: int = 1):
  """The update: `loss_fn(params, batch, rng, step) -> (loss, metrics)`, gradients, optax step.
  Returns (new_state, metrics). `rng` depends only on `seed` and the step, so a resumed run
  draws the same numbers as an uninterrupted one; `step` (traced) is for loss schedules.
  `accum_steps` N > 1: the gradient of N microbatches, one after another (`accumulated`)."""
  def train_step(state: train_state.TrainState, batch: dict):
    rng = jax.random.fold_in(jax.random.key(seed), state.step)
    if accum_steps > 1:
      grads, metrics = accumulated(loss_fn, state.params, batch, rng, state.step, accum_steps)
    else:
      (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, rng,
                                                                     state.step)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics.update(grad_norm=optax.tree.norm(grads), learning_rate=schedule(state.step),
                   # The loss above is of the params *before* this update: the norm of the new
                   # ones tells whether the state about to be checkpointed is still finite.
                   param_norm=optax.tree.norm(params))
    return train_state.TrainState(state.step + 1, params, opt_state), metrics
  return train_step


def microbatches(batch: dict, n: int) -> dict:
  """Each leaf B x ... as N x B/N x ...: microbatch k holds rows k, k + N, k + 2N, ..., so that
  every device's rows split among the microbatches without moving."""
  return jax.tree.map(lambda x: x.reshape(x.shape[0] // n, n, *x.shape[1:]).swapaxes(0, 1),
                      batch)


def accumulated(loss_fn, params, batch: dict, rng, step, n: int):
  """(gradient, metrics) of the batch from N microbatches, the first on its own (so that the
  running sum takes the gradient's shardings) and the others in a scan: each weighted by its
  share of the batch's scored tokens (`target_mask`), which for a loss that is a mean over them
  (`objectives.accumulation_error`) is the full batch's gradient, with a 1/N-th of its
  activations at a time. Microbatch k's `rng` is `rng` folded with k."""
  parts = microbatches(batch, n)
  tokens_N = parts["target_mask"].reshape(n, -1).sum(-1).astype(jnp.float32)
  weights_N = tokens_N / jnp.maximum(tokens_N.sum(), 1.0)
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def weighted(k):
    part = jax.tree.map(lambda x: x[k], parts)
    (_, metrics), grads = grad_fn(params, part, jax.random.fold_in(rng, k), step)
    return jax.tree.map(lambda x: weights_N[k] * x.astype(jnp.float32), (grads, metrics))

  def body(total, k):
    return jax.tree.map(jnp.add, total, weighted(k)), None

  (grads, metrics), _ = jax.lax.scan(body, weighted(0), jnp.arange(1, n))
  return jax.tree.map(lambda g, p: g.astype(p.dtype), grads, params), metrics


@dataclasses.dataclass(frozen=True)
class Experiment:
  """A config's model, loss, optimizer and abstract train state on `mesh`."""
  config: ml_collections.ConfigDict
  mesh: jax.sharding.Mesh
  model: models.Model
  loss_fn: Callable  # (params, batch, rng, step) -> (loss, metrics)
  tx: optax.GradientTransformation
  schedule: Callable  # step -> learning rate
  abstract_state: train_state.TrainState  # Shapes only, each leaf carrying its sharding.
  state_shardings: train_state.TrainState

  @property
  def num_params(self) -> int:
    return sum(x.size for x in jax.tree.leaves(self.abstract_state.params))

  def init_state(self, rng: jax.Array) -> train_state.TrainState:
    """A freshly initialised state, each shard written straight to its device."""
    return train_state.init(self.model.init_params, self.tx, self.mesh, self.state_shardings,
                            rng)

  def jit_train_step(self, donate: bool = True):
    """`make_train_step` jitted as the trainer runs it (and the planner compiles it): the state
    keeps its shardings and is donated (`donate=False` keeps the input state, for timing the
    same state again), the batch is split over the mesh's batch axes."""
    step = make_train_step(self.loss_fn, self.tx, self.schedule, int(self.config.seed),
                           int(self.config.get("grad_accum_steps", 1)))
    return jax.jit(step, in_shardings=(self.state_shardings, sharding.batch_sharding(self.mesh)),
                   out_shardings=(self.state_shardings, NamedSharding(self.mesh, P())),
                   donate_argnums=(0,) if donate else ())

  def model_flops(self) -> int:
    """Model FLOPs of one train step (`step_flops.py`: its matmuls, forward and backward):
    traced, never run, without the recomputation options (`model.remat`,
    `objective.logits_chunk`), which change neither the loss nor the gradients, so that MFU does
    not count recomputed work (PaLM's definition). Without those options, this step's own."""
    exp = self
    if (self.config.model.get("remat", "none") != "none"
        or self.config.objective.get("logits_chunk", 0)):
      plain = self.config.copy_and_resolve_references()
      with plain.unlocked():
        plain.model.remat = "none"
        plain.objective.logits_chunk = 0
      exp = build(plain, self.mesh)
    with sharding.activate(self.mesh):
      return step_flops.matmul_flops(exp.jit_train_step(), exp.abstract_state,
                                     exp.abstract_batch())

  def abstract_batch(self) -> dict:
    """The global train batch as the pipeline gives it (`data/train_mixture.py`), shapes only,
    split over the batch axes."""
    config = self.config
    b, t, size = config.batch_size, config.model.max_text_len, config.model.image_size
    batch = {"image": ((b, size, size, 3), np.float32), "tokens": ((b, t), np.int32),
             "target_mask": ((b, t - 1), np.bool_)}
    if config.objective.get("text_only_batch") == "separate":
      batch.update(text_only_tokens=((b, t), np.int32),
                   text_only_target_mask=((b, t - 1), np.bool_))
    shards = sharding.batch_sharding(self.mesh)
    return {k: jax.ShapeDtypeStruct(shape, dtype, sharding=shards)
            for k, (shape, dtype) in batch.items()}


def build(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> Experiment:
  """The experiment of `config` on `mesh`. It needs `seed`, `total_steps`, `batch_size`,
  `model`, `objective` and `optimizer` (the model family and the objective check theirs);
  `validate` checks a trainer's config as a whole."""
  sharding.check_batch_divides(config.batch_size, mesh, "config.batch_size")
  accum = int(config.get("grad_accum_steps", 1))
  if accum > 1:  # Each microbatch is split over the batch axes.
    sharding.check_batch_divides(config.batch_size // accum, mesh,
                                 "config.batch_size / config.grad_accum_steps")
  model = models.build(config.model)
  loss_fn = objectives.make_loss(config, model.predict_fns)
  frozen = config.get("frozen")
  tx = optimizer_lib.build(config.optimizer, config.total_steps, frozen)
  schedule = optimizer_lib.learning_rate_schedule(config.optimizer, config.total_steps)
  abstract_state, shardings = train_state.abstract_state_and_shardings(model.init_params, tx,
                                                                       mesh)
  optimizer_lib.check_frozen(abstract_state.params, frozen)
  return Experiment(config, mesh, model, loss_fn, tx, schedule, abstract_state, shardings)


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The config the trainer wrote to `<workdir>/config.json` (plugins renamed since it was
  written take their new names)."""
  path = paths.join(workdir, "config.json")
  if not paths.path(path).exists():
    raise errors.ConfigError(f"{path} does not exist: {workdir} is not a trainer's workdir, or "
                             "it predates config.json; pass the config that trained it "
                             "(--config, or config= in the inference API).")
  try:
    config = ml_collections.ConfigDict(json.loads(paths.path(path).read_text()))
  except ValueError as e:
    raise errors.ConfigError(f"{path} is not valid JSON ({e}); pass the config instead.") from e
  if config.get("objective"):
    name = config.objective.get("name")
    config.objective.name = objectives.RENAMED.get(name, name)
  for eval_config in config.get("evals", {}).values():
    eval_config.type = evaluators.RENAMED.get(eval_config.type, eval_config.type)
  return config


def check_tokenizer_fits(tokenizer, model_config: ml_collections.ConfigDict) -> None:
  """ConfigError if the tokenizer has ids the model has no embedding for (a gather out of range
  gives NaN features, and NaN scores would rank as hits)."""
  if tokenizer.vocab_size > model_config.vocab_size:
    raise errors.ConfigError(
        f"the tokenizer ({tokenizer.source}) has {tokenizer.vocab_size} pieces but "
        f"config.model.vocab_size={model_config.vocab_size}: raise the latter, or use the "
        "tokenizer the model was trained with")
