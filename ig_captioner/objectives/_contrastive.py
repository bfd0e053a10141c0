"""What the two contrastive objectives share: embeddings of a batch and their similarities.

Negatives come from the whole global batch: inside `jit` the embeddings are global arrays, so
`z_img @ z_txt.T` compares every image with every text whatever the sharding (XLA gathers the
text embeddings). The similarity matrix is kept split by rows (images) over the batch axes.

Shape letters: B global batch, E joint embedding width.
"""

import flax.linen as nn
import jax.numpy as jnp


def cosine_similarities(z_img_BxE, z_txt_BxE):
  """sims_BxB of unit embeddings, rows = images, columns = texts, split by rows."""
  sims_BxB = jnp.einsum("ie,te->it", z_img_BxE, z_txt_BxE, preferred_element_type=jnp.float32)
  return nn.with_logical_constraint(sims_BxB, ("activation_batch", None))


def similarities(predict_fns: dict, params, batch) -> tuple:
  """(cosine similarities sims_BxB with rows = images and columns = texts, scale, bias)."""
  z_img_BxE = predict_fns["embed_images"](params, batch["image"])
  z_txt_BxE = predict_fns["embed_texts"](params, batch["tokens"])
  scale, bias = predict_fns["logit_scale_and_bias"](params)
  return cosine_similarities(z_img_BxE, z_txt_BxE), scale, bias


def batch_accuracy(logits_BxB) -> jnp.ndarray:
  """Fraction of images whose own text scores highest in the batch (a training-time signal)."""
  return jnp.mean(jnp.argmax(logits_BxB, axis=1) == jnp.arange(logits_BxB.shape[0]))
