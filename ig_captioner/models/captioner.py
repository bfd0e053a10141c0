"""The captioner family: a ViT encoder and one causal text decoder that gives both P(t|I) (with
cross-attention to the visual tokens) and P(t) (the same decoder with cross-attention skipped).
Trained with the `captioning` objective: `text_only_weight` 0 is the standard captioner, > 0
the IG captioner.

config.model: name='captioner', encoder ('B/16'), decoder (a size name), decoder_depth (None: the
size's), vocab_size, image_size, max_text_len (tokens incl. BOS and EOS), dtype.
Predict functions: `models.CAPTION_FNS`.

Shape letters: B images, N visual tokens, D width, L/T text length, V vocabulary,
P texts (prompts), G chunks of C texts.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from ig_captioner import errors
from ig_captioner.models import decoder as decoder_lib
from ig_captioner.models import layers
from ig_captioner.models import likelihood
from ig_captioner.models import vit


class Captioner(nn.Module):
  encoder_variant: str
  decoder_size: layers.TransformerSize
  vocab_size: int
  image_size: int
  max_text_len: int
  dtype: Any = jnp.float32

  def setup(self):
    self.encoder = vit.VisionEncoder(self.encoder_variant, self.image_size, self.dtype)
    # Input tokens are the text without its last token (next-token prediction), hence -1.
    self.decoder = decoder_lib.TextDecoder(self.decoder_size, self.vocab_size,
                                           self.max_text_len - 1, self.dtype)

  def encode(self, images_BxHxWxC):
    return self.encoder(images_BxHxWxC)

  def decode(self, tokens_BxL, visual_BxNxD=None):
    return self.decoder(tokens_BxL, visual_BxNxD)

  def __call__(self, images_BxHxWxC, tokens_BxL):
    """Runs both paths; used to create every parameter at init."""
    return self.decode(tokens_BxL, self.encode(images_BxHxWxC))


def build(model_config: ml_collections.ConfigDict) -> Captioner:
  """Builds the captioner from `config.model`, checking its values."""
  vit.check(model_config.encoder, model_config.image_size)
  size = layers.named_size(model_config.decoder, "model.decoder",
                           model_config.get("decoder_depth"))
  if model_config.max_text_len < 2:
    raise errors.ConfigError(f"config.model.max_text_len={model_config.max_text_len} must be "
                             ">= 2 (BOS plus at least EOS)")
  return Captioner(
      encoder_variant=model_config.encoder,
      decoder_size=size,
      vocab_size=model_config.vocab_size,
      image_size=model_config.image_size,
      max_text_len=model_config.max_text_len,
      dtype=layers.compute_dtype(model_config.dtype))


def init_params(model: Captioner, rng: jax.Array):
  """Boxed (logically partitioned) params from dummy inputs of the model's shapes."""
  images = jnp.zeros((1, model.image_size, model.image_size, 3), jnp.float32)
  tokens = jnp.zeros((1, model.max_text_len - 1), jnp.int32)
  return model.init(rng, images, tokens)["params"]


def _chunked(texts_PxT: jax.Array, chunk: int) -> tuple[jax.Array, int]:
  """Pads P up to a multiple of `chunk` (with copies of text 0) and splits it: (G, C, T)."""
  num_texts = texts_PxT.shape[0]
  pad = -num_texts % chunk
  if pad:
    texts_PxT = jnp.concatenate([texts_PxT, jnp.repeat(texts_PxT[:1], pad, axis=0)])
  return texts_PxT.reshape(-1, chunk, texts_PxT.shape[-1]), num_texts


def predict_fns(model: Captioner) -> dict:
  """`models.CAPTION_FNS` for this model."""

  def encode_images(params, images_BxHxWxC):
    return model.apply({"params": params}, images_BxHxWxC, method="encode")

  def decode(params, tokens_BxL, visual_BxNxD=None):
    return model.apply({"params": params}, tokens_BxL, visual_BxNxD, method="decode")

  def text_logprobs(params, texts_PxT, chunk: int):
    """log P(t) of every text, chunk texts per decoder call, cross-attention skipped."""
    chunks_GxCxT, num_texts = _chunked(texts_PxT, chunk)

    def score(tokens_CxT):
      inputs, targets = likelihood.inputs_and_targets(tokens_CxT)
      return likelihood.sequence_logprob(decode(params, inputs), targets)

    return jax.lax.map(score, chunks_GxCxT).reshape(-1)[:num_texts]

  def image_text_logprobs(params, visual_BxNxD, texts_PxT, chunk: int):
    """log P(t|I) of every (image, text) pair; each decoder call scores B x chunk pairs, the
    visual tokens repeated per text with the (sharded) image axis leading."""
    chunks_GxCxT, num_texts = _chunked(texts_PxT, chunk)
    b, n, d = visual_BxNxD.shape

    def score(tokens_CxT):
      c, t = tokens_CxT.shape
      inputs, targets = likelihood.inputs_and_targets(
          jnp.broadcast_to(tokens_CxT[None], (b, c, t)).reshape(b * c, t))
      visual = jnp.broadcast_to(visual_BxNxD[:, None], (b, c, n, d)).reshape(b * c, n, d)
      return likelihood.sequence_logprob(decode(params, inputs, visual), targets).reshape(b, c)

    logp_GxBxC = jax.lax.map(score, chunks_GxCxT)
    return jnp.moveaxis(logp_GxBxC, 0, 1).reshape(b, -1)[:, :num_texts]

  return {"encode_images": encode_images, "decode": decode, "text_logprobs": text_logprobs,
          "image_text_logprobs": image_text_logprobs}
