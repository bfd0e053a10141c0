"""The cached scorer (`scoring/prompt_scoring.py`) against today's reference path, its oracle:
every family, alpha, template set, prefix token and block size; its plan's work; sharding."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ig_captioner import models
from ig_captioner import sharding
from ig_captioner.token_ids import BOS_ID, EOS_ID, PREFIX_IDS
from ig_captioner.scoring import class_scores
from ig_captioner.scoring import prompt_plan
from ig_captioner.scoring import prompt_scoring
from tests import helpers
from tests.unit.test_scoring import _model_and_params

TEXT_LEN = 8


def templated_prompts(rng, num_classes: int, template_lens, prefix_id=None, vocab=32):
  """Class-major prompts: template k is `[BOS, (prefix), w_k..., class words, (w'), EOS]` with a
  class name of 1-3 tokens; the last class fills the whole length (no EOS: truncated)."""
  names = [rng.integers(7, vocab, rng.integers(1, 4)) for _ in range(num_classes)]
  prompts = []
  for c, name in enumerate(names):
    for k, words in enumerate(template_lens):
      head = [BOS_ID] + ([prefix_id] if prefix_id else []) + [7 + k] * words
      text = head + list(name) + ([9] if k % 2 else []) + [EOS_ID]
      if c == num_classes - 1 and k == 0:
        text = head + list(rng.integers(7, vocab, TEXT_LEN))
      prompts.append((text + [0] * TEXT_LEN)[:TEXT_LEN])
  return np.array(prompts, np.int32)


@pytest.mark.parametrize("family,template_lens,prefix,block", [
    ("captioner", (2, 0, 3), "caption", 2),
    ("coca", (2, 1), None, 64),
    ("cappa", (3, 2), "classification", 4),
])
def test_cached_scores_equal_the_reference(family, template_lens, prefix, block):
  built, params = _model_and_params(family)
  fns = built.predict_fns
  rng = np.random.default_rng(len(template_lens) + block)
  num_classes, num_templates = 5, len(template_lens)
  prompts = templated_prompts(rng, num_classes, template_lens,
                              PREFIX_IDS[prefix] if prefix else None)
  images = rng.normal(size=(3, 16, 16, 3)).astype(np.float32)
  visual = fns["encode_images"](params, images)
  groups = np.arange(len(prompts)) % num_templates
  # Blocks of up to about `block` prompts (at most the group's 5) of one image, or of all 3
  # images once the whole group fits three times: image slices one after another, or at once.
  cached = prompt_scoring.PromptScorer(fns, prompts, groups, "cached", images_per_device=3,
                                       block_tokens=block * (TEXT_LEN - 1))
  assert cached.images_per_block == (1 if block < num_classes else 3)
  reference = prompt_scoring.PromptScorer(fns, prompts, groups, "reference", chunk=block)

  logp_img = {}
  logp_txt = {}
  for name, scorer in (("cached", cached), ("reference", reference)):
    logp_img[name] = np.asarray(jax.jit(scorer.image_text_logprobs)(params, visual,
                                                                    scorer.inputs))
    logp_txt[name] = np.asarray(jax.jit(scorer.text_logprobs)(params, scorer.inputs))
  np.testing.assert_allclose(logp_img["cached"], logp_img["reference"], rtol=0, atol=1e-4)
  np.testing.assert_allclose(logp_txt["cached"], logp_txt["reference"], rtol=0, atol=1e-4)
  alphas = (0.0, 0.5, 1.0, 1.5)
  scores = {name: np.asarray(class_scores.ig_class_scores(logp_img[name], logp_txt[name],
                                                          num_classes, alphas))
            for name in logp_img}
  np.testing.assert_allclose(scores["cached"], scores["reference"], rtol=0, atol=1e-4)


def test_plan_decodes_each_template_prefix_once_and_pads_only_a_remainder():
  rng = np.random.default_rng(0)
  template_lens = (3, 1, 2)
  prompts = templated_prompts(rng, 7, template_lens)
  groups = np.arange(len(prompts)) % 3
  plan = prompt_plan.plan_prompts(prompts, groups, max_block=4)
  # The prefix is BOS plus the template's own words (the class name follows).
  np.testing.assert_array_equal(plan.arrays["prefix_len_R"], [1 + w for w in template_lens])
  block = 4  # 7 prompts per group, blocks of at most 4: balanced to 4 + 3.
  rows = np.concatenate([b["prompt_GxC"].reshape(-1) for b in plan.arrays["buckets"]])
  assert sorted(rows[rows < len(prompts)].tolist()) == list(range(len(prompts)))
  assert (rows == len(prompts)).sum() == 3 * (2 * block - 7)  # One padding row per group.
  assert plan.decoded_tokens < plan.scored_tokens
  # 10 prompts in one group: a single block of 10, no padding (not one block of max_block).
  small = prompt_plan.plan_prompts(prompts[:10], None, max_block=64)
  assert [b["prompt_GxC"].shape for b in small.arrays["buckets"]] == [(1, 10)] * len(
      small.arrays["buckets"])


def full_length_prompts(rng, num: int, text_len: int = 16) -> np.ndarray:
  """`[BOS, random words..., EOS]` filling `text_len`: only BOS is shared."""
  prompts = rng.integers(7, 1000, (num, text_len)).astype(np.int32)
  prompts[:, 0], prompts[:, -1] = BOS_ID, EOS_ID
  return prompts


def test_block_shape_fills_blocks_with_a_whole_group_per_image_first():
  rng = np.random.default_rng(0)
  # (images, prompts) per block: 14 suffix positions each (BOS shared), 32 images per device.
  assert prompt_plan.block_shape(full_length_prompts(rng, 100), None, 4096, 32) == (2, 100)
  assert prompt_plan.block_shape(full_length_prompts(rng, 10), None, 4096, 32) == (16, 10)
  assert prompt_plan.block_shape(full_length_prompts(rng, 10), None, 300, 6) == (2, 10)
  assert prompt_plan.block_shape(full_length_prompts(rng, 10), None, 10, 6) == (1, 1)
  # 1000 prompts of 31 positions: 132 fit in 4096 (the plan balances them to 8 blocks of 125).
  assert prompt_plan.block_shape(full_length_prompts(rng, 1000, 33), None, 4096, 8) == (
      1, 132)
  # Two groups: sizes follow the largest.
  groups = np.arange(30) % 2
  assert prompt_plan.block_shape(full_length_prompts(rng, 30), groups, 4096, 4) == (4, 15)


def test_block_shape_keeps_prompts_of_mixed_lengths_in_blocks_that_pad_little():
  # 32 short prompts (suffix 2, a block of 4 positions) and 32 long (suffix 12): one block of
  # 64 pads the short ones to 12 positions (768 per image); blocks of 32 hold 512, as do 16,
  # 8 and 4. The largest size within 5% of the fewest is 32.
  rng = np.random.default_rng(1)
  prompts = full_length_prompts(rng, 64, 14)
  prompts[:32, 3], prompts[:32, 4:] = EOS_ID, 0
  assert prompt_plan.block_shape(prompts, None, 4096, 8) == (8, 32)
  plan = prompt_plan.plan_prompts(prompts, None, 32)
  assert plan.decoded_tokens == 1 + 32 * 4 + 32 * 12  # BOS once, then the two blocks.


def test_image_chunks_are_stitched_back_in_image_order():
  x_BxX = jnp.arange(12.0).reshape(6, 2)
  seen = []

  def fn(tree):
    seen.append(tree["x"].shape)
    return tree["x"] * 10, jnp.broadcast_to(tree["x"][:1, 0], tree["x"].shape[:1])

  out, first = prompt_scoring.map_image_chunks(fn, 3, {"x": x_BxX})
  assert seen == [(2, 2)]  # Traced once for slices of 2 images.
  np.testing.assert_array_equal(out, x_BxX * 10)
  # Slice i holds images i and i + 3 (strided, so that a sharded image axis stays sharded).
  np.testing.assert_array_equal(first, x_BxX[[0, 1, 2, 0, 1, 2], 0])


def test_cached_scores_with_images_sharded_over_eight_devices_equal_one_device():
  built, params = _model_and_params("captioner")
  fns = built.predict_fns
  rng = np.random.default_rng(3)
  prompts = templated_prompts(rng, 4, (2, 1))
  # 2 images per device scored one after the other: each slice must keep one image per device.
  scorer = prompt_scoring.PromptScorer(fns, prompts, np.arange(len(prompts)) % 2,
                                       images_per_device=2, block_tokens=3 * TEXT_LEN)
  assert scorer.images_per_block == 1
  images = rng.normal(size=(16, 16, 16, 3)).astype(np.float32)

  def score(params, images, inputs):
    return scorer.image_text_logprobs(params, fns["encode_images"](params, images), inputs)

  single = np.asarray(jax.jit(score)(params, images, scorer.inputs))
  mesh = sharding.make_mesh(ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1)))
  with sharding.activate(mesh):
    sharded_images = jax.device_put(images, sharding.batch_sharding(mesh))
    out = jax.jit(score)(params, sharded_images, scorer.inputs)
  assert len(out.sharding.device_set) == 8
  np.testing.assert_allclose(np.asarray(out), single, rtol=0, atol=1e-4)


def test_a_batch_the_image_slices_do_not_divide_is_scored_in_fewer_slices():
  built, params = _model_and_params("captioner")
  fns = built.predict_fns
  rng = np.random.default_rng(5)
  prompts = templated_prompts(rng, 3, (1,))
  scorer = prompt_scoring.PromptScorer(fns, prompts, images_per_device=4,
                                       block_tokens=3 * (TEXT_LEN - 1))
  assert scorer.images_per_block == 1  # 4 slices of a 4-image batch; 6 images: 2 slices.
  visual = fns["encode_images"](params, rng.normal(size=(6, 16, 16, 3)).astype(np.float32))
  out = np.asarray(jax.jit(scorer.image_text_logprobs)(params, visual, scorer.inputs))
  one_by_one = [np.asarray(scorer.image_text_logprobs(params, visual[i:i + 1], scorer.inputs))
                for i in range(6)]
  np.testing.assert_allclose(out, np.concatenate(one_by_one), rtol=0, atol=1e-4)


def test_bfloat16_cached_scores_stay_close_to_float32():
  built, params = _model_and_params("captioner")
  bf16 = helpers.jitted(models.build(helpers.tiny_model_config(dtype="bfloat16"))).predict_fns
  rng = np.random.default_rng(4)
  prompts = templated_prompts(rng, 4, (2,))
  images = jnp.asarray(rng.normal(size=(2, 16, 16, 3)), jnp.float32)
  out = {}
  for name, fns in (("f32", built.predict_fns), ("bf16", bf16)):
    scorer = prompt_scoring.PromptScorer(fns, prompts)
    out[name] = np.asarray(scorer.image_text_logprobs(params, fns["encode_images"](params, images),
                                                      scorer.inputs))
  assert out["bf16"].dtype == np.float32
  np.testing.assert_allclose(out["bf16"], out["f32"], rtol=0.02, atol=0.3)
  assert not np.array_equal(out["bf16"], out["f32"])  # It really ran in bfloat16.
