"""Text embeddings of many texts (two towers, CoCa: `models.EMBED_FNS`), a chunk at a time.

Shape letters: P texts, G chunks of C texts, T text length, E embedding width.
"""

import jax

from ig_captioner.scoring import likelihood


def embed_texts_chunked(embed_texts, params, texts_PxT: jax.Array, chunk: int) -> jax.Array:
  """embed_texts over P texts, `chunk` per call (a scan: memory bounded by one chunk): z_PxE."""
  chunks_GxCxT, num_texts = likelihood.chunked(texts_PxT, chunk)
  z_GxCxE = jax.lax.map(lambda tokens_CxT: embed_texts(params, tokens_CxT), chunks_GxCxT)
  return z_GxCxE.reshape(-1, z_GxCxE.shape[-1])[:num_texts]
