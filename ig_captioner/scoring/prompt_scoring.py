"""Exact fast scoring of many texts per image: log P(t|I) for B images x P prompts, and log P(t).

The reference (`likelihood.image_text_logprobs`) decodes every (image, prompt) pair in full.
This path gives the same numbers with far less work, through a family's cached decoder
(`cross_kv`, `extend`; `models.CACHE_FNS`):
- the visual tokens' cross-attention keys/values are computed once per image, and every prompt
  block attends to them without a copy per prompt;
- the prefix a group of prompts shares is decoded once per (image, group), and each prompt's
  suffix after it, in the blocks `prompt_plan` cut;
- a block holds many prompts of one image and as few images as fill it: the products with each
  image's keys/values then have long rows. Image slices and blocks run one at a time
  (`lax.map`): memory is bounded by one block's logits.

Shape letters: B images, P prompts, T text length, R groups, S prefix length, G blocks,
C prompts per block, L suffix length, V vocabulary.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from ig_captioner import errors
from ig_captioner import token_ids
from ig_captioner.scoring import likelihood
from ig_captioner.scoring import prompt_plan


def map_image_chunks(fn, chunks: int, per_image):
  """`fn` over `chunks` slices of the image axis (every leaf's leading axis B), one after
  another (`lax.map`), the results' leading axes stitched back in image order. Slice i holds
  images i, i + chunks, ..., so that it keeps the image axis's sharding over devices. A batch
  of images_per_device x devices divides into a `prompt_plan.block_shape` image count's
  slices; any other batch is cut into the most slices (at most `chunks`) that divide it."""
  chunks = math.gcd(jax.tree.leaves(per_image)[0].shape[0], chunks)
  if chunks == 1:
    return fn(per_image)

  def split(x_BxX):
    return x_BxX.reshape(x_BxX.shape[0] // chunks, chunks, *x_BxX.shape[1:]).swapaxes(0, 1)

  out = jax.lax.map(fn, jax.tree.map(split, per_image))
  return jax.tree.map(lambda y: y.swapaxes(0, 1).reshape(-1, *y.shape[2:]), out)


def _masked_logprob_sum(logits_XxLxV, targets_XxL, unscored_ids=token_ids.UNSCORED_IDS):
  """Summed log-softmax of the scored targets (never materialising the log-softmax)."""
  target_XxL = jnp.take_along_axis(logits_XxLxV, targets_XxL[..., None], -1)[..., 0]
  logp_XxL = target_XxL - jax.nn.logsumexp(logits_XxLxV, axis=-1)
  return jnp.sum(jnp.where(token_ids.is_scored(targets_XxL, unscored_ids), logp_XxL, 0.0),
                 axis=-1)


def prefix_state(extend, params, cross_kvs, num_images: int, prefix: dict,
                 unscored_ids=token_ids.UNSCORED_IDS) -> dict:
  """Every group's shared prefix decoded once per image: its keys/values per block (head-major
  k_BxRxHxSxK), its own targets' summed log-probs prefix_BxR, and the next-token log-probs at
  its end last_BxRxV (each prompt's first own target). `prefix`: the plan's
  `prompt_plan.PREFIX_KEYS`."""
  b = num_images
  prefix_RxS = prefix["prefix_inputs_RxS"]
  r, s = prefix_RxS.shape
  logits_BxRxSxV, prefix_kvs = extend(params, jnp.broadcast_to(prefix_RxS, (b, r, s)),
                                      jnp.arange(s), None, cross_kvs)
  prefix_BxR = _masked_logprob_sum(logits_BxRxSxV, jnp.broadcast_to(prefix["prefix_targets_RxS"],
                                                                     (b, r, s)), unscored_ids)
  last_BxRxV = jax.nn.log_softmax(jnp.take_along_axis(
      logits_BxRxSxV, (prefix["prefix_len_R"] - 1)[None, :, None, None], axis=2)[:, :, 0],
                                  axis=-1)
  return {"kvs": prefix_kvs, "prefix_BxR": prefix_BxR, "last_BxRxV": last_BxRxV,
          "len_R": prefix["prefix_len_R"]}


def suffix_logprobs(extend, params, cross_kvs, state: dict, group, inputs_BxCxL, targets_BxCxL,
                    first_BxC, unscored_ids=token_ids.UNSCORED_IDS):
  """log P of C prompts per image of one group (`group`, traced or not), from their suffixes
  (per image, or broadcast) decoded after the group's cached prefix (`prefix_state`): logp_BxC."""
  b, c, length = inputs_BxCxL.shape
  visible_S = jnp.arange(state["kvs"][0][0].shape[-2]) < state["len_R"][group]
  contexts = tuple(((k_BxRxHxSxK[:, group], v_BxRxHxSxK[:, group], visible_S),)
                   for k_BxRxHxSxK, v_BxRxHxSxK in state["kvs"])
  logits_BxCxLxV, _ = extend(params, inputs_BxCxL, state["len_R"][group] + jnp.arange(length),
                             contexts, cross_kvs)
  suffix_BxC = _masked_logprob_sum(logits_BxCxLxV, targets_BxCxL, unscored_ids)
  first_BxC = jnp.where(token_ids.is_scored(first_BxC, unscored_ids), jnp.take_along_axis(
      state["last_BxRxV"][:, group], first_BxC, axis=-1), 0.0)
  return state["prefix_BxR"][:, group, None] + first_BxC + suffix_BxC


def score_blocks(extend, params, cross_kvs, state: dict, blocks: dict,
                 unscored_ids=token_ids.UNSCORED_IDS):
  """scores_GxBxC of G suffix blocks (`group_G`, `inputs_GxCxL`, `targets_GxCxL`, `first_GxC`),
  one block at a time (`lax.map`), after their groups' prefixes (`prefix_state`)."""
  b = state["prefix_BxR"].shape[0]

  def block(item):
    c, length = item["inputs_GxCxL"].shape
    return suffix_logprobs(extend, params, cross_kvs, state, item["group_G"],
                           jnp.broadcast_to(item["inputs_GxCxL"], (b, c, length)),
                           jnp.broadcast_to(item["targets_GxCxL"], (b, c, length)),
                           jnp.broadcast_to(item["first_GxC"], (b, c)), unscored_ids)

  return jax.lax.map(block, {k: v for k, v in blocks.items() if k != "prompt_GxC"})


def _score(extend, params, cross_kvs, num_images: int, plan: dict, num_prompts: int,
           unscored_ids):
  """logp_BxP of every prompt, from the cached decoder (cross_kvs None: text only, B = 1)."""
  b = num_images
  plan = jax.tree.map(jnp.asarray, plan)
  state = prefix_state(extend, params, cross_kvs, b, {k: plan[k] for k in prompt_plan.PREFIX_KEYS},
                       unscored_ids)
  logp_BxP = jnp.zeros((b, num_prompts + 1), jnp.float32)  # Slot P takes the padding rows.
  for bucket in plan["buckets"]:
    scores_GxBxC = score_blocks(extend, params, cross_kvs, state, bucket, unscored_ids)
    scores_BxGC = jnp.moveaxis(scores_GxBxC, 0, 1).reshape(b, -1)
    logp_BxP = logp_BxP.at[:, bucket["prompt_GxC"].reshape(-1)].set(scores_BxGC)
  return logp_BxP[:, :num_prompts]


def image_text_logprobs(fns: dict, params, visual_BxNxD, plan: dict, num_prompts: int,
                        image_chunks: int = 1, unscored_ids=token_ids.UNSCORED_IDS):
  """log P(t|I), logp_BxP, for every image and every prompt of `plan` (its `arrays`), the
  images in `image_chunks` slices one after another (`prompt_plan.block_shape`'s images per
  block)."""

  def score(visual_XxNxD):
    cross_kvs = fns["cross_kv"](params, visual_XxNxD)
    return _score(fns["extend"], params, cross_kvs, visual_XxNxD.shape[0], plan, num_prompts,
                  unscored_ids)

  return map_image_chunks(score, image_chunks, visual_BxNxD)


def text_logprobs(fns: dict, params, plan: dict, num_prompts: int,
                  unscored_ids=token_ids.UNSCORED_IDS):
  """log P(t), logp_P, of every prompt of `plan`, from the decoder without the image."""
  return _score(fns["extend"], params, None, 1, plan, num_prompts, unscored_ids)[0]


METHODS = ("cached", "reference")
# Where log P(t) comes from: the decoder with cross-attention skipped (the IG paper's), or the
# decoder given `null_images` (open_clip's genlip `--pmi` idea, for captioners never trained on
# text alone, such as public CoCa checkpoints).
PRIORS = ("no_image", "null_image")


def null_images(image_size: int) -> jax.Array:
  """The fixed blank image of the `null_image` prior, images_1xHxWxC: mid-grey (0 in the
  pipelines' [-1, 1] pixel range)."""
  return jnp.zeros((1, image_size, image_size, 3), jnp.float32)


class PromptScorer:
  """log P(t|I) and log P(t) of one fixed prompt set, by the cached path (default) or the
  reference (`likelihood.image_text_logprobs`: every pair decoded in full, its test oracle).

  `inputs` (host arrays) is the scorer's argument: put it on the devices once, pass it to the
  jitted `text_logprobs(params, inputs)` and `image_text_logprobs(params, visual, inputs)`.
  Cached blocks hold about `block_tokens` decoder positions per device (images x prompts x
  suffix length, shaped by `prompt_plan.block_shape`; the largest temporary is one block's
  logits, block_tokens x vocabulary in float32); the reference scores `chunk` prompts per call.
  `images_per_device` is the image batch per device that `image_text_logprobs` will get.
  """

  def __init__(self, predict_fns: dict, prompts_PxT: np.ndarray, groups_P=None,
               method: str = "cached", images_per_device: int = 1, block_tokens: int = 4096,
               chunk: int = 64, prior: str = "no_image", image_size: int | None = None,
               unscored_ids: tuple[int, ...] = token_ids.UNSCORED_IDS):
    if method not in METHODS:
      raise errors.ConfigError(f"scoring={method!r} is not one of {METHODS}")
    if prior not in PRIORS or (prior == "null_image" and not image_size):
      raise errors.ConfigError(f"prior={prior!r} is not one of {PRIORS} (null_image needs the "
                               "model's image_size)")
    self.prior, self._image_size = prior, image_size
    self.unscored_ids = tuple(unscored_ids)  # The tokenizer's (`token_ids.is_scored`).
    if method == "cached" and not all(name in predict_fns for name in ("cross_kv", "extend")):
      raise errors.ConfigError("scoring='cached' needs a family supplying cross_kv and extend "
                               "(models.CACHE_FNS); set the evaluator's scoring='reference'")
    self.method = method
    self.num_prompts = len(prompts_PxT)
    self.images_per_device = images_per_device
    self._fns, self._chunk = predict_fns, chunk
    if method == "cached":
      # The prompts per block do not depend on the images, so log P(t) (one "image") uses the
      # same plan.
      self.images_per_block, prompts = prompt_plan.block_shape(prompts_PxT, groups_P,
                                                               block_tokens, images_per_device)
      self.plan = prompt_plan.plan_prompts(prompts_PxT, groups_P, prompts)
      self.inputs = self.plan.arrays
    else:
      self.plan, self.inputs = None, np.asarray(prompts_PxT, np.int32)
      self.images_per_block = images_per_device

  def text_logprobs(self, params, inputs):
    """log P(t), logp_P, from the source `prior` names."""
    if self.prior == "null_image":
      visual_1xNxD = self._fns["encode_images"](params, null_images(self._image_size))
      return self.image_text_logprobs(params, visual_1xNxD, inputs, image_chunks=1)[0]
    if self.plan is None:
      return likelihood.text_logprobs(self._fns, params, inputs, self._chunk, self.unscored_ids)
    return text_logprobs(self._fns, params, inputs, self.num_prompts, self.unscored_ids)

  def image_text_logprobs(self, params, visual_BxNxD, inputs, image_chunks: int | None = None):
    """log P(t|I), logp_BxP (`image_chunks`: default the plan's image slices)."""
    if self.plan is None:
      return likelihood.image_text_logprobs(self._fns, params, visual_BxNxD, inputs,
                                            self._chunk, self.unscored_ids)
    return image_text_logprobs(self._fns, params, visual_BxNxD, inputs, self.num_prompts,
                               image_chunks or self.image_chunks, self.unscored_ids)

  @property
  def image_chunks(self) -> int:
    """Image slices scored one after another per batch of `images_per_device` per device."""
    return self.images_per_device // self.images_per_block
