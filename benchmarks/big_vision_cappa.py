"""big_vision's CapPa train step on a benchmark shape, from big_vision's own code: its CapPa model
(`models/proj/cappa/cappa.py`), its optimizer factory (`big_vision.optax.make`: gradient clipping,
Adam, decoupled weight decay on kernels, warm-up and cosine schedule) and its loss
(`utils.weighted_softmax_xent`), assembled as `trainers/proj/cappa/generative.py`'s `update_fn`
does (loss, gradients, update, and its three norms as measurements). Autoregressive only
(masked_pred_prob 0), f32, no dropout.

big_vision is not a package nor a dependency of this project: pass a checkout's root
(`git clone https://github.com/google-research/big_vision`), which goes on sys.path; it needs
nothing beyond this project's environment for these modules (checked at big_vision 0127fb6).
"""

import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from benchmarks import shapes as shapes_lib


def import_big_vision(root: str):
  """(cappa module, big_vision.optax, big_vision.utils) from the checkout at `root`."""
  if not os.path.isfile(os.path.join(root, "big_vision", "models", "proj", "cappa", "cappa.py")):
    raise SystemExit(f"--big_vision={root} is not a big_vision checkout (no "
                     "big_vision/models/proj/cappa/cappa.py): git clone "
                     "https://github.com/google-research/big_vision and pass its root")
  sys.path.insert(0, os.path.abspath(root))
  from big_vision import optax as bv_optax  # pylint: disable=g-import-not-at-top
  from big_vision import utils as bv_utils  # pylint: disable=g-import-not-at-top
  from big_vision.models.proj.cappa import cappa  # pylint: disable=g-import-not-at-top
  return cappa, bv_optax, bv_utils


def step_and_inputs(root: str, shape: shapes_lib.Shape, batch_size: int, total_steps: int = 100):
  """(jitted update, train state, batch) of big_vision's CapPa at `shape` (this project's
  captioner's widths, depths, patch size, vocabulary; labels of text_len - 1 tokens, which
  big_vision shifts right itself, as ours reads tokens[:-1] to predict tokens[1:])."""
  cappa, bv_optax, bv_utils = import_big_vision(root)
  size = shape.size
  model = cappa.Model(
      num_heads=size.num_heads, num_layers=shape.encoder_depth, mlp_dim=size.mlp_dim,
      emb_dim=size.width, vocab_size=shapes_lib.VOCAB, seq_len=shape.text_len - 1,
      patches=(shape.patch, shape.patch), decoder_num_layers=shape.decoder_depth)
  rng = np.random.default_rng(0)
  labels = shapes_lib.random_prompts(rng, batch_size, shape)[:, 1:]  # No BOS in big_vision.
  batch = {"image": shapes_lib.images(rng, batch_size, shape), "labels": labels}
  params = jax.jit(model.init)(jax.random.key(0), batch["image"][:1], labels[:1])["params"]
  config = ml_collections.ConfigDict(dict(
      optax_name="scale_by_adam", optax=dict(b1=0.9, b2=0.98), grad_clip_norm=1.0, lr=1e-3,
      wd=1e-4, schedule=dict(decay_type="cosine", warmup_steps=10)))
  tx, _ = bv_optax.make(config, params, sched_kw=dict(total_steps=total_steps,
                                                      batch_size=batch_size, data_size=None))

  def update_fn(state, batch):
    def loss_fn(params):
      logits = model.apply({"params": params}, batch["image"], batch["labels"], train=True)
      weights = jnp.where(batch["labels"] != 0, 1.0, 0.0)
      return bv_utils.weighted_softmax_xent(logits=logits, labels=batch["labels"],
                                            weights=weights, reduction=True, normalize=True)
    loss, grads = jax.value_and_grad(loss_fn)(state["params"])
    updates, opt = tx.update(grads, state["opt"], state["params"])
    params = jax.tree.map(jnp.add, state["params"], updates)
    norm = lambda tree: jnp.sqrt(sum(jnp.sum(x * x) for x in jax.tree.leaves(tree)))
    return ({"params": params, "opt": opt},
            {"training_loss": loss, "l2_grads": norm(grads), "l2_params": norm(params),
             "l2_updates": norm(updates)})

  state = {"params": params, "opt": jax.jit(tx.init)(params)}
  return jax.jit(update_fn), state, batch
