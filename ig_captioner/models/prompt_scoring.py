"""Exact fast scoring of many texts per image: log P(t|I) for B images x P prompts, and log P(t).

The reference (`likelihood.caption_fns`) decodes every (image, prompt) pair in full. This path
gives the same numbers with far less work, through a family's cached decoder (`cross_kv`,
`extend`; `models.CACHE_FNS`):
- the visual tokens' cross-attention keys/values are computed once per image, and every prompt
  block attends to them without a copy per prompt;
- prompts are grouped (zero-shot: by template). The longest prefix a group's prompts share is
  decoded once per (image, group); only the rest of each prompt (its suffix) is decoded per
  prompt, attending to the cached prefix;
- within a group, suffixes are sorted by length and cut into blocks of equal size (no more than
  `max_block` prompts; sizes balanced so that a block holds no padding rows beyond the
  remainder); a block's length is its longest suffix rounded up to `length_multiple`, so a few
  shapes are compiled once per prompt set and never per image batch;
- a block holds many prompts of one image (the whole group when it fits in `block_tokens` and
  its prompts' lengths do not make that mostly padding) and as few images as fill it
  (`block_shape`): the products with each image's keys/values then have long rows. Image
  slices and blocks run one at a time (`lax.map`): memory is bounded by one block's logits.

`plan_prompts` (host side, numpy) fixes the blocks; `image_text_logprobs` and `text_logprobs`
(jittable) take the plan's arrays as arguments, so that 80,000 prompts are not constants baked
into the program.

Shape letters: B images, P prompts, T text length, R groups, S prefix length, G blocks,
C prompts per block, L suffix length, V vocabulary.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from ig_captioner import errors
from ig_captioner.data.tokenizer import PAD_ID
from ig_captioner.models import likelihood


@dataclasses.dataclass(frozen=True)
class PromptPlan:
  """How `plan_prompts` cut P prompts into prefixes and suffix blocks. `arrays` is the pytree
  the scoring functions take; the rest describes the work (for benchmarks and logs)."""
  arrays: dict
  num_prompts: int
  decoded_tokens: int  # Decoder positions run per image: prefixes plus padded suffix blocks.
  scored_tokens: int  # Positions the reference decodes per image: (T - 1) per prompt.


def _text_lengths(prompts_PxT: np.ndarray) -> np.ndarray:
  """Tokens up to the last non-PAD one, per prompt."""
  nonpad_PxT = prompts_PxT != PAD_ID
  return np.where(nonpad_PxT.any(1), prompts_PxT.shape[1] - np.argmax(nonpad_PxT[:, ::-1], 1),
                  0)


def _shared_prefix(tokens_CxT: np.ndarray, lengths_C: np.ndarray) -> int:
  """Prefix length S to decode once: the longest common prefix, at least 1 (BOS) and at most
  min(length) - 1, so that every prompt still has its first own target at position S."""
  same_T = np.all(tokens_CxT == tokens_CxT[:1], axis=0)
  common = int(np.argmin(same_T)) if not same_T.all() else tokens_CxT.shape[1]
  return max(1, min(common, int(lengths_C.min()) - 1))


def block_shape(prompts_PxT: np.ndarray, groups_P, block_tokens: int, images_per_device: int,
                padding_tolerance: float = 0.05, length_multiple: int = 4) -> tuple[int, int]:
  """(images, prompts) per block and device, for blocks of at most about `block_tokens` decoder
  positions. Prompts: the most of a group per image (long rows per image make the products
  with that image's keys/values large: on CPUs several times faster than many images with a
  few prompts each) whose padded positions stay within `padding_tolerance` of the fewest any
  block size gives (a block is as long as its longest suffix, so large blocks of prompts of
  mixed lengths are mostly padding). Images: as many as fit, a divisor of `images_per_device`.
  """
  prompts_PxT = np.asarray(prompts_PxT, np.int32)
  grouped = _group_prefixes(prompts_PxT, groups_P)

  def cut(max_block):
    block, blocks = _cut_blocks(*grouped, max_block, length_multiple, prompts_PxT.shape[1])
    return sum(len(items) * block * length for length, items in blocks.items()), max(blocks)

  positions = cut(len(prompts_PxT))[1]  # The longest block length, whatever the block size.
  largest = min(max(len(m) for m in grouped[1]), max(1, block_tokens // positions))
  candidates = [largest]
  while candidates[-1] > 4:
    candidates.append(max(4, -(-candidates[-1] // 2)))
  work = {c: cut(c)[0] for c in candidates}
  prompts = max(c for c in candidates if work[c] <= (1 + padding_tolerance) * min(work.values()))
  images = max(1, min(images_per_device, block_tokens // (prompts * positions)))
  while images_per_device % images:
    images -= 1
  return images, prompts


def map_image_chunks(fn, chunks: int, per_image):
  """`fn` over `chunks` slices of the image axis (every leaf's leading axis B), one after
  another (`lax.map`), the results' leading axes stitched back in image order. Slice i holds
  images i, i + chunks, ..., so that it keeps the image axis's sharding over devices. A batch
  of images_per_device x devices divides into a `block_shape` image count's slices; any other
  batch is cut into the most slices (at most `chunks`) that divide it."""
  chunks = math.gcd(jax.tree.leaves(per_image)[0].shape[0], chunks)
  if chunks == 1:
    return fn(per_image)

  def split(x_BxX):
    return x_BxX.reshape(x_BxX.shape[0] // chunks, chunks, *x_BxX.shape[1:]).swapaxes(0, 1)

  out = jax.lax.map(fn, jax.tree.map(split, per_image))
  return jax.tree.map(lambda y: y.swapaxes(0, 1).reshape(-1, *y.shape[2:]), out)


def suffix_arrays(rows_XxT: np.ndarray, prefix_len: int, length: int):
  """Each prompt's part after a shared prefix: inputs_XxL and targets_XxL (PAD-filled to
  `length`) and its first own target first_X, the token the prefix's last position predicts."""
  inputs = np.full((len(rows_XxT), length), PAD_ID, np.int32)
  targets = np.full((len(rows_XxT), length), PAD_ID, np.int32)
  suffix = rows_XxT[:, prefix_len:prefix_len + length + 1]
  inputs[:, :suffix.shape[1] - 1] = suffix[:, :-1]
  targets[:, :suffix.shape[1] - 1] = suffix[:, 1:]
  return inputs, targets, rows_XxT[:, prefix_len]


def _group_prefixes(prompts_PxT: np.ndarray, groups_P):
  """Each prompt's length lengths_P, each group's members and its shared prefix prefix_len_R."""
  lengths_P = _text_lengths(prompts_PxT)
  if (lengths_P < 2).any():
    raise ValueError(f"prompts {np.flatnonzero(lengths_P < 2)[:5].tolist()} have fewer than 2 "
                     "tokens (BOS and EOS at least)")
  groups_P = np.zeros(len(prompts_PxT), np.int64) if groups_P is None else np.asarray(groups_P)
  members = [np.flatnonzero(groups_P == g) for g in np.unique(groups_P)]
  prefix_len_R = np.array([_shared_prefix(prompts_PxT[m], lengths_P[m]) for m in members],
                          np.int32)
  return lengths_P, members, prefix_len_R


def _cut_blocks(lengths_P, members, prefix_len_R, max_block: int, length_multiple: int,
                text_len: int):
  """(C, {suffix length: [(group, prompt indices)]}): each group's prompts sorted by suffix
  length and cut into blocks of C (balanced: ceil(n / ceil(n / max_block)) for the largest
  group), a block's length its longest suffix rounded up to `length_multiple`."""
  block = max(len(m) for m in members)
  block = -(-block // -(-block // max_block))
  blocks = {}
  for r, m in enumerate(members):
    suffix_len_M = lengths_P[m] - 1 - prefix_len_R[r]
    order = m[np.argsort(suffix_len_M, kind="stable")]
    for start in range(0, len(order), block):
      rows = order[start:start + block]
      longest = int((lengths_P[rows] - 1 - prefix_len_R[r]).max())
      length = min(max(1, -(-longest // length_multiple) * length_multiple),
                   text_len - 1 - int(prefix_len_R[r]))
      blocks.setdefault(max(length, 1), []).append((r, rows))
  return block, blocks


def plan_prompts(prompts_PxT: np.ndarray, groups_P: np.ndarray | None = None,
                 max_block: int = 64, length_multiple: int = 4) -> PromptPlan:
  """Cuts prompts (tokens `[BOS, ..., EOS, PAD...]`) into a shared prefix per group (default:
  one group) and suffix blocks. Zero-shot passes the template index as the group."""
  prompts_PxT = np.asarray(prompts_PxT, np.int32)
  num_prompts, text_len = prompts_PxT.shape
  if max_block <= 0 or length_multiple <= 0:
    raise errors.ConfigError(f"prompt blocks need max_block={max_block} and "
                             f"length_multiple={length_multiple} to be positive")
  lengths_P, members, prefix_len_R = _group_prefixes(prompts_PxT, groups_P)
  max_prefix = int(prefix_len_R.max())
  prefix_inputs_RxS = np.full((len(members), max_prefix), PAD_ID, np.int32)
  prefix_targets_RxS = np.full((len(members), max_prefix), PAD_ID, np.int32)
  for r, m in enumerate(members):
    s = prefix_len_R[r]
    prefix_inputs_RxS[r, :s] = prompts_PxT[m[0], :s]
    # Positions 0..S-2 predict shared tokens; position S-1 predicts each prompt's own token.
    prefix_targets_RxS[r, :s - 1] = prompts_PxT[m[0], 1:s]

  block, blocks = _cut_blocks(lengths_P, members, prefix_len_R, max_block, length_multiple,
                              text_len)
  buckets = []
  decoded = int(prefix_len_R.sum())
  for length, items in sorted(blocks.items()):
    g = len(items)
    prompt_GxC = np.full((g, block), num_prompts, np.int32)  # Padding rows score into slot P.
    inputs_GxCxL = np.full((g, block, length), PAD_ID, np.int32)
    targets_GxCxL = np.full((g, block, length), PAD_ID, np.int32)
    first_GxC = np.full((g, block), PAD_ID, np.int32)
    group_G = np.array([r for r, _ in items], np.int32)
    for i, (r, rows) in enumerate(items):
      prompt_GxC[i, :len(rows)] = rows
      (inputs_GxCxL[i, :len(rows)], targets_GxCxL[i, :len(rows)],
       first_GxC[i, :len(rows)]) = suffix_arrays(prompts_PxT[rows], int(prefix_len_R[r]), length)
    # Inputs after a prompt's own EOS are decoded but never scored (targets there are PAD).
    buckets.append({"group_G": group_G, "prompt_GxC": prompt_GxC, "inputs_GxCxL": inputs_GxCxL,
                    "targets_GxCxL": targets_GxCxL, "first_GxC": first_GxC})
    decoded += g * block * length
  arrays = {"prefix_inputs_RxS": prefix_inputs_RxS, "prefix_targets_RxS": prefix_targets_RxS,
            "prefix_len_R": prefix_len_R, "buckets": buckets}
  return PromptPlan(arrays, num_prompts, decoded, num_prompts * (text_len - 1))


def _masked_logprob_sum(logits_XxLxV, targets_XxL):
  """Summed log-softmax of the scored targets (never materialising the log-softmax)."""
  target_XxL = jnp.take_along_axis(logits_XxLxV, targets_XxL[..., None], -1)[..., 0]
  logp_XxL = target_XxL - jax.nn.logsumexp(logits_XxLxV, axis=-1)
  return jnp.sum(jnp.where(likelihood.scored_targets(targets_XxL), logp_XxL, 0.0), axis=-1)


PREFIX_KEYS = ("prefix_inputs_RxS", "prefix_targets_RxS", "prefix_len_R")


def prefix_state(extend, params, cross_kvs, num_images: int, prefix: dict) -> dict:
  """Every group's shared prefix decoded once per image: its keys/values per block (head-major
  k_BxRxHxSxK), its own targets' summed log-probs prefix_BxR, and the next-token log-probs at
  its end last_BxRxV (each prompt's first own target). `prefix`: the plan's PREFIX_KEYS."""
  b = num_images
  prefix_RxS = prefix["prefix_inputs_RxS"]
  r, s = prefix_RxS.shape
  logits_BxRxSxV, prefix_kvs = extend(params, jnp.broadcast_to(prefix_RxS, (b, r, s)),
                                      jnp.arange(s), None, cross_kvs)
  prefix_BxR = _masked_logprob_sum(logits_BxRxSxV, jnp.broadcast_to(prefix["prefix_targets_RxS"],
                                                                     (b, r, s)))
  last_BxRxV = jax.nn.log_softmax(jnp.take_along_axis(
      logits_BxRxSxV, (prefix["prefix_len_R"] - 1)[None, :, None, None], axis=2)[:, :, 0],
                                  axis=-1)
  return {"kvs": prefix_kvs, "prefix_BxR": prefix_BxR, "last_BxRxV": last_BxRxV,
          "len_R": prefix["prefix_len_R"]}


def suffix_logprobs(extend, params, cross_kvs, state: dict, group, inputs_BxCxL, targets_BxCxL,
                    first_BxC):
  """log P of C prompts per image of one group (`group`, traced or not), from their suffixes
  (per image, or broadcast) decoded after the group's cached prefix (`prefix_state`): logp_BxC."""
  b, c, length = inputs_BxCxL.shape
  visible_S = jnp.arange(state["kvs"][0][0].shape[-2]) < state["len_R"][group]
  contexts = tuple(((k_BxRxHxSxK[:, group], v_BxRxHxSxK[:, group], visible_S),)
                   for k_BxRxHxSxK, v_BxRxHxSxK in state["kvs"])
  logits_BxCxLxV, _ = extend(params, inputs_BxCxL, state["len_R"][group] + jnp.arange(length),
                             contexts, cross_kvs)
  suffix_BxC = _masked_logprob_sum(logits_BxCxLxV, targets_BxCxL)
  first_BxC = jnp.where(likelihood.scored_targets(first_BxC), jnp.take_along_axis(
      state["last_BxRxV"][:, group], first_BxC, axis=-1), 0.0)
  return state["prefix_BxR"][:, group, None] + first_BxC + suffix_BxC


def score_blocks(extend, params, cross_kvs, state: dict, blocks: dict):
  """scores_GxBxC of G suffix blocks (`group_G`, `inputs_GxCxL`, `targets_GxCxL`, `first_GxC`),
  one block at a time (`lax.map`), after their groups' prefixes (`prefix_state`)."""
  b = state["prefix_BxR"].shape[0]

  def block(item):
    c, length = item["inputs_GxCxL"].shape
    return suffix_logprobs(extend, params, cross_kvs, state, item["group_G"],
                           jnp.broadcast_to(item["inputs_GxCxL"], (b, c, length)),
                           jnp.broadcast_to(item["targets_GxCxL"], (b, c, length)),
                           jnp.broadcast_to(item["first_GxC"], (b, c)))

  return jax.lax.map(block, {k: v for k, v in blocks.items() if k != "prompt_GxC"})


def _score(extend, params, cross_kvs, num_images: int, plan: dict, num_prompts: int):
  """logp_BxP of every prompt, from the cached decoder (cross_kvs None: text only, B = 1)."""
  b = num_images
  plan = jax.tree.map(jnp.asarray, plan)
  state = prefix_state(extend, params, cross_kvs, b, {k: plan[k] for k in PREFIX_KEYS})
  logp_BxP = jnp.zeros((b, num_prompts + 1), jnp.float32)  # Slot P takes the padding rows.
  for bucket in plan["buckets"]:
    scores_GxBxC = score_blocks(extend, params, cross_kvs, state, bucket)
    scores_BxGC = jnp.moveaxis(scores_GxBxC, 0, 1).reshape(b, -1)
    logp_BxP = logp_BxP.at[:, bucket["prompt_GxC"].reshape(-1)].set(scores_BxGC)
  return logp_BxP[:, :num_prompts]


def image_text_logprobs(fns: dict, params, visual_BxNxD, plan: dict, num_prompts: int,
                        image_chunks: int = 1):
  """log P(t|I), logp_BxP, for every image and every prompt of `plan` (its `arrays`), the
  images in `image_chunks` slices one after another (`block_shape`'s images per block)."""

  def score(visual_XxNxD):
    cross_kvs = fns["cross_kv"](params, visual_XxNxD)
    return _score(fns["extend"], params, cross_kvs, visual_XxNxD.shape[0], plan, num_prompts)

  return map_image_chunks(score, image_chunks, visual_BxNxD)


def text_logprobs(fns: dict, params, plan: dict, num_prompts: int):
  """log P(t), logp_P, of every prompt of `plan`, from the decoder without the image."""
  return _score(fns["extend"], params, None, 1, plan, num_prompts)[0]


METHODS = ("cached", "reference")


class PromptScorer:
  """log P(t|I) and log P(t) of one fixed prompt set, by the cached path (default) or the
  reference (`likelihood.caption_fns`: every pair decoded in full, its test oracle).

  `inputs` (host arrays) is the scorer's argument: put it on the devices once, pass it to the
  jitted `text_logprobs(params, inputs)` and `image_text_logprobs(params, visual, inputs)`.
  Cached blocks hold about `block_tokens` decoder positions per device (images x prompts x
  suffix length, shaped by `block_shape`; the largest temporary is one block's logits,
  block_tokens x vocabulary in float32); the reference scores `chunk` prompts per call.
  `images_per_device` is the image batch per device that `image_text_logprobs` will get.
  """

  def __init__(self, predict_fns: dict, prompts_PxT: np.ndarray, groups_P=None,
               method: str = "cached", images_per_device: int = 1, block_tokens: int = 4096,
               chunk: int = 64):
    if method not in METHODS:
      raise errors.ConfigError(f"scoring={method!r} is not one of {METHODS}")
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
      self.images_per_block, prompts = block_shape(prompts_PxT, groups_P, block_tokens,
                                                   images_per_device)
      self.plan = plan_prompts(prompts_PxT, groups_P, prompts)
      self.inputs = self.plan.arrays
    else:
      self.plan, self.inputs = None, np.asarray(prompts_PxT, np.int32)
      self.images_per_block = images_per_device

  def text_logprobs(self, params, inputs):
    if self.plan is None:
      return self._fns["text_logprobs"](params, inputs, self._chunk)
    return text_logprobs(self._fns, params, inputs, self.num_prompts)

  def image_text_logprobs(self, params, visual_BxNxD, inputs):
    if self.plan is None:
      return self._fns["image_text_logprobs"](params, visual_BxNxD, inputs, self._chunk)
    return image_text_logprobs(self._fns, params, visual_BxNxD, inputs, self.num_prompts,
                               self.image_chunks)

  @property
  def image_chunks(self) -> int:
    """Image slices scored one after another per batch of `images_per_device` per device."""
    return self.images_per_device // self.images_per_block
