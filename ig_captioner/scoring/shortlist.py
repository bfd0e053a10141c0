"""Two-stage zero-shot scoring: shortlist the top-k classes per image with a cheap score, then
score only those with every template.

Stage 1 is the IG score s(c, I) = mean_k [log P(t_ck|I) - alpha1 * log P(t_ck)] over the first
`shortlist_templates` templates only (cached scoring of C x k1 prompts). Stage 2 is the exact IG
score over all templates, for the shortlisted classes of each image: their suffixes are gathered
per image and decoded after each template's cached prefix. A class outside the shortlist is never
predicted, so this is an approximation of exact scoring and is reported under its own names
(`zeroshot/<name>/shortlist<k>/...`), with the shortlist's recall (true class kept).

Shape letters: B images, C classes, K templates, P prompts (C x K, class-major), R groups
(templates), L suffix length, V vocabulary, A alphas, S shortlist size.
"""

import jax
import jax.numpy as jnp
import numpy as np

from ig_captioner import token_ids
from ig_captioner.scoring import prompt_plan
from ig_captioner.scoring import prompt_scoring


def suffix_tables(prompts_PxT: np.ndarray, num_templates: int) -> dict:
  """Per template r: the prefix shared by its prompts (a `prompt_plan` plan's prefix arrays)
  and every class's suffix inputs/targets (R, C, L) and first own target (R, C)."""
  prompts_PxT = np.asarray(prompts_PxT, np.int32)
  num_prompts, text_len = prompts_PxT.shape
  groups_P = np.arange(num_prompts) % num_templates
  plan = prompt_plan.plan_prompts(prompts_PxT, groups_P)
  prefix_len_R = plan.arrays["prefix_len_R"]
  length = text_len - 1 - int(prefix_len_R.min())
  # Class-major prompts: template r of every class is every num_templates-th row from r.
  inputs, targets, first = zip(*(prompt_plan.suffix_arrays(
      prompts_PxT[r::num_templates], int(prefix_len_R[r]), length) for r in range(num_templates)))
  tables = {k: plan.arrays[k] for k in prompt_plan.PREFIX_KEYS}
  tables.update(inputs_RxCxL=np.stack(inputs), targets_RxCxL=np.stack(targets),
                first_RxC=np.stack(first))
  return tables


def shortlisted_logprobs(fns: dict, params, visual_BxNxD, tables: dict, shortlist_BxS,
                         unscored_ids=token_ids.UNSCORED_IDS):
  """log P(t|I) of every template of each image's shortlisted classes, logp_BxSxR
  (`unscored_ids`: the tokenizer's, `token_ids.is_scored`)."""
  extend = fns["extend"]
  cross_kvs = fns["cross_kv"](params, visual_BxNxD)
  state = prompt_scoring.prefix_state(extend, params, cross_kvs, shortlist_BxS.shape[0],
                                      {k: tables[k] for k in prompt_plan.PREFIX_KEYS},
                                      unscored_ids)

  def template(r):
    return prompt_scoring.suffix_logprobs(
        extend, params, cross_kvs, state, r, tables["inputs_RxCxL"][r][shortlist_BxS],
        tables["targets_RxCxL"][r][shortlist_BxS], tables["first_RxC"][r][shortlist_BxS],
        unscored_ids)

  num_templates = tables["first_RxC"].shape[0]
  return jnp.moveaxis(jax.lax.map(template, jnp.arange(num_templates)), 0, -1)


def predictions(logp_img_BxSxR, logp_txt_P, shortlist_BxS, alphas, num_templates: int):
  """The predicted class per alpha, pred_AxB: the best IG score among each image's shortlist."""
  txt_CxR = logp_txt_P.reshape(-1, num_templates)
  txt_BxS = txt_CxR.mean(-1)[shortlist_BxS]
  scores_AxBxS = (logp_img_BxSxR.mean(-1)[None] -
                  jnp.asarray(alphas, jnp.float32)[:, None, None] * txt_BxS[None])
  best_AxB = jnp.argmax(scores_AxBxS, axis=-1)
  return jnp.take_along_axis(jnp.broadcast_to(shortlist_BxS, scores_AxBxS.shape),
                             best_AxB[..., None], axis=-1)[..., 0]
