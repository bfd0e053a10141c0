"""How the cached scorer cuts a prompt set (host side, numpy): a shared prefix per group of
prompts, decoded once per image, and each prompt's suffix in blocks of equal shape.

- Prompts are grouped (zero-shot: by template). The longest prefix a group's prompts share is
  decoded once per (image, group); only the rest of each prompt (its suffix) is decoded per
  prompt, attending to the cached prefix.
- Within a group, suffixes are sorted by length and cut into blocks of equal size (no more than
  `max_block` prompts; sizes balanced so that a block holds no padding rows beyond the
  remainder); a block's length is its longest suffix rounded up to `length_multiple`, so a few
  shapes are compiled once per prompt set and never per image batch.
- `block_shape` chooses how many prompts of one image and how many images fill a block of about
  `block_tokens` decoder positions.

`plan_prompts` returns the arrays that `prompt_scoring` takes as arguments, so that 80,000
prompts are not constants baked into the program.

Shape letters: P prompts, T text length, R groups, S prefix length, G blocks, C prompts per
block, L suffix length.
"""

import dataclasses

import numpy as np

from ig_captioner import errors
from ig_captioner.token_ids import PAD_ID


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


PREFIX_KEYS = ("prefix_inputs_RxS", "prefix_targets_RxS", "prefix_len_R")
