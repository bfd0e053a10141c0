"""Large-scale caption scoring (ImageNet x CLIP's 80 templates: 50,000 images x 80,000 prompts):
prompts streamed through fixed-size jitted blocks, with progress and an ETA.

The one-program scorer (`prompt_scoring.PromptScorer`) compiles every block of a prompt
set into one program per image batch; here each call scores `blocks_per_call` suffix blocks of
one length bucket, so the compiled shapes depend only on the block size and the bucket lengths
(a few programs, the same for every data set of that text length and batch), the host sees
progress between calls, and the device holds one chunk of logits at a time. The image axis keeps
the sharding of the visual tokens; log P(t) stays once per prompt per checkpoint (its caller's).

Shape letters: B images, P prompts, G blocks, C prompts per block, L suffix length.
"""

import logging
import time

import jax
import jax.numpy as jnp
import numpy as np

from ig_captioner.scoring import prompt_plan
from ig_captioner.scoring import prompt_scoring
from ig_captioner.token_ids import PAD_ID


def _chunks(bucket: dict, blocks_per_call: int, num_prompts: int) -> list[dict]:
  """A bucket's blocks in pieces of `blocks_per_call`; the last piece padded with blocks that
  score into the discarded slot P."""
  pieces = []
  for start in range(0, len(bucket["group_G"]), blocks_per_call):
    piece = {k: v[start:start + blocks_per_call] for k, v in bucket.items()}
    pad = blocks_per_call - len(piece["group_G"])
    if pad:
      fill = {"group_G": 0, "prompt_GxC": num_prompts, "inputs_GxCxL": PAD_ID,
              "targets_GxCxL": PAD_ID, "first_GxC": PAD_ID}
      piece = {k: np.concatenate([v, np.full((pad,) + v.shape[1:], fill[k], v.dtype)])
               for k, v in piece.items()}
    pieces.append(piece)
  return pieces


class StreamingScorer:
  """log P(t|I) of a fixed prompt set, streamed (see the module docstring)."""

  def __init__(self, predict_fns: dict, scorer: prompt_scoring.PromptScorer,
               blocks_per_call: int, replicated):
    """`scorer`: the cached scorer of the prompt set, whose plan (blocks, image slices) this
    streams."""
    plan = scorer.plan
    self.num_prompts = scorer.num_prompts
    self.plan = plan
    self.prefix = {k: plan.arrays[k] for k in prompt_plan.PREFIX_KEYS}
    self.chunks = [c for bucket in plan.arrays["buckets"]
                   for c in _chunks(bucket, blocks_per_call, self.num_prompts)]
    image_chunks = scorer.image_chunks
    extend = predict_fns["extend"]

    def start(params, visual_BxNxD, prefix):
      cross_kvs = predict_fns["cross_kv"](params, visual_BxNxD)
      return cross_kvs, prompt_scoring.prefix_state(extend, params, cross_kvs,
                                                   visual_BxNxD.shape[0], prefix,
                                                   scorer.unscored_ids)

    def chunk(params, cross_kvs, state, blocks):
      per_image = {k: v for k, v in state.items() if k != "len_R"}

      def score(images):
        kvs, image_state = images
        scores_GxBxC = prompt_scoring.score_blocks(extend, params, kvs,
                                                   {**image_state, "len_R": state["len_R"]},
                                                   blocks, scorer.unscored_ids)
        return jnp.moveaxis(scores_GxBxC, 0, 1).reshape(scores_GxBxC.shape[1], -1)

      return prompt_scoring.map_image_chunks(score, image_chunks, (cross_kvs, per_image))

    self._start = jax.jit(start)
    self._chunk = jax.jit(chunk, out_shardings=replicated)
    self._replicated = replicated
    self._device_inputs = None

  def device_inputs(self):
    """The prompt arrays on the devices (put there once)."""
    if self._device_inputs is None:
      self._device_inputs = jax.device_put(
          (self.prefix, [{k: v for k, v in c.items() if k != "prompt_GxC"} for c in self.chunks]),
          self._replicated)
    return self._device_inputs

  def image_text_logprobs(self, params, visual_BxNxD) -> np.ndarray:
    """logp_BxP (host) for a batch of images: the prefix once, then every chunk."""
    prefix, chunks = self.device_inputs()
    cross_kvs, state = self._start(params, visual_BxNxD, prefix)
    outputs = [self._chunk(params, cross_kvs, state, c) for c in chunks]  # Dispatched async.
    logp_BxP = np.zeros((visual_BxNxD.shape[0], self.num_prompts + 1), np.float32)
    for piece, out in zip(self.chunks, outputs):
      logp_BxP[:, piece["prompt_GxC"].reshape(-1)] = np.asarray(jax.device_get(out))
    return logp_BxP[:, :self.num_prompts]


class Progress:
  """Logs images done, pairs/s and an ETA, at most every `every_s` seconds."""

  def __init__(self, label: str, total_images: int, prompts: int, every_s: float = 30.0):
    self._label, self._total, self._prompts, self._every = label, total_images, prompts, every_s
    self._start = self._last = time.monotonic()
    self.done = 0

  def update(self, images: int) -> str | None:
    """Counts `images` more; returns the line it logged, if any."""
    self.done = min(self.done + images, self._total)
    now = time.monotonic()
    if now - self._last < self._every and self.done < self._total:
      return None
    self._last = now
    rate = self.done / max(now - self._start, 1e-9)
    eta = (self._total - self.done) / max(rate, 1e-9)
    line = (f"{self._label}: {self.done:,}/{self._total:,} images "
            f"({self.done / self._total:.0%}), {rate * self._prompts:,.0f} pairs/s, "
            f"ETA {int(eta // 3600)}h{int(eta % 3600 // 60):02d}m{int(eta % 60):02d}s")
    logging.info(line)
    return line
