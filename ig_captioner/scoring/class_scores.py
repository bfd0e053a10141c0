"""Zero-shot class scores from the scores of class prompts, for both kinds of model:

- caption likelihoods (captioners) give the IG score
      s(c, I) = mean_k [log P(t_ck|I) - alpha * log P(t_ck)]
              = mean_k log P(t_ck|I) - alpha * mean_k log P(t_ck),
  the log of the geometric mean over templates k of the likelihood ratio (Yang et al.,
  arXiv:2311.17072; alpha 0 is the standard captioner's score);
- embeddings (two towers) follow CLIP's prompt ensemble (Radford et al., 2021): a class
  embedding is the L2-normalised mean of its templates' normalised text embeddings.

Prompts are class-major (`class_prompts`): prompt c * K + k is class c in template k.
Shape letters: B images, C classes, K templates, P prompts (C x K), A alphas, E embedding width.
"""

from typing import Sequence

import jax
import jax.numpy as jnp


def class_prompts(class_names: Sequence[str], templates: Sequence[str]) -> list[str]:
  """Every template filled with every class name, class-major."""
  return [t.format(c) for c in class_names for t in templates]


def ig_class_scores(logp_img_BxP: jax.Array, logp_txt_P: jax.Array, num_classes: int,
                    alphas: Sequence[float]) -> jax.Array:
  """IG scores per alpha and class, templates averaged. Returns scores_AxBxC."""
  b = logp_img_BxP.shape[0]
  img_BxC = logp_img_BxP.reshape(b, num_classes, -1).mean(-1)
  txt_C = logp_txt_P.reshape(num_classes, -1).mean(-1)
  alphas_A = jnp.asarray(alphas, jnp.float32)
  return img_BxC[None] - alphas_A[:, None, None] * txt_C[None, None]


def class_embeddings(z_prompts_PxE: jax.Array, num_classes: int) -> jax.Array:
  """CLIP's prompt ensemble: normalised mean of each class's (normalised) template embeddings,
  classes_CxE."""
  mean_CxE = z_prompts_PxE.reshape(num_classes, -1, z_prompts_PxE.shape[-1]).mean(1)
  return mean_CxE / jnp.linalg.norm(mean_CxE, axis=-1, keepdims=True)
