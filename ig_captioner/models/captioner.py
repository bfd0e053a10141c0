"""The captioner family: a ViT encoder and one causal text decoder that gives both P(t|I) (with
cross-attention to the visual tokens) and P(t) (the same decoder with cross-attention skipped).
Trained with the `captioning` objective: `text_only_weight` 0 is the standard captioner, > 0
the IG captioner.

config.model: name='captioner', encoder ('B/16'), decoder (a size name), decoder_depth (None: the
size's), vocab_size, image_size, max_text_len (tokens incl. BOS and EOS), dtype, and optional
remat ('none', default, or 'block': every transformer block's activations are recomputed in the
backward pass instead of kept, less memory for about a third more compute). The encoder takes
the ViT options of other codebases' towers (`class_token`, `ln_pre`, `patch_bias`,
`image_mean`/`image_std`, `activation`, `ln_eps`; see `two_towers`), so that a converted image
tower can start it (`config.init_from`); the decoder keeps this codebase's own style.
Predict functions: `models.CAPTION_FNS`, `CACHE_FNS`, `PARALLEL_FNS` (CapPa), `CHUNKED_FNS`.

Shape letters: B images, N visual tokens, D width, L/T text length, V vocabulary.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from ig_captioner import errors
from ig_captioner.models import decoder as decoder_lib
from ig_captioner.models import base
from ig_captioner.models import layers
from ig_captioner.models import mixed_precision
from ig_captioner.models import vit


REMAT_POLICIES = ("none", "block")


class Captioner(nn.Module):
  encoder_variant: str
  decoder_size: layers.TransformerSize
  vocab_size: int
  image_size: int
  max_text_len: int
  dtype: Any = jnp.float32
  remat: bool = False
  encoder_style: layers.BlockStyle = layers.BlockStyle()
  encoder_options: vit.Options = vit.Options()

  def setup(self):
    self.encoder = vit.VisionEncoder(self.encoder_variant, self.image_size, self.dtype,
                                     self.remat, self.encoder_style, self.encoder_options)
    # Input tokens are the text without its last token (next-token prediction), hence -1.
    self.decoder = decoder_lib.TextDecoder(self.decoder_size, self.vocab_size,
                                           self.max_text_len - 1, self.dtype, self.remat)

  def encode(self, images_BxHxWxC):
    return self.encoder(images_BxHxWxC)

  def decode(self, tokens_BxL, visual_BxNxD=None, bidirectional_B=None):
    return self.decoder(tokens_BxL, visual_BxNxD, bidirectional_B)

  def decode_features(self, tokens_BxL, visual_BxNxD=None, bidirectional_B=None):
    return self.decoder.features(tokens_BxL, visual_BxNxD, bidirectional_B)

  def decode_logits(self, h_BxLxD):
    return self.decoder.logits(h_BxLxD)

  def cross_kv(self, visual_BxNxD):
    return self.decoder.cross_kv(visual_BxNxD)

  def extend(self, tokens_BxCxQ, positions_Q, contexts=None, cross_kvs=None):
    return self.decoder.extend(tokens_BxCxQ, positions_Q, contexts, cross_kvs)

  def __call__(self, images_BxHxWxC, tokens_BxL):
    """Runs both paths; used to create every parameter at init."""
    return self.decode(tokens_BxL, self.encode(images_BxHxWxC))


def build(model_config: ml_collections.ConfigDict) -> Captioner:
  """Builds the captioner from `config.model`, checking its values."""
  vit.check(model_config.encoder, model_config.image_size)
  size = layers.named_size(model_config.decoder, "model.decoder",
                           model_config.get("decoder_depth"))
  base.check_max_text_len(model_config)
  remat = model_config.get("remat", "none")
  if remat not in REMAT_POLICIES:
    raise errors.ConfigError(f"config.model.remat={remat!r} is not one of {REMAT_POLICIES} "
                             "('block' recomputes each transformer block in the backward pass)")
  return Captioner(
      encoder_variant=model_config.encoder,
      decoder_size=size,
      vocab_size=model_config.vocab_size,
      image_size=model_config.image_size,
      max_text_len=model_config.max_text_len,
      dtype=mixed_precision.compute_dtype(model_config.dtype),
      remat=remat == "block", encoder_style=layers.block_style(model_config),
      encoder_options=vit.options(model_config))


def init_params(model: Captioner, rng: jax.Array):
  """Boxed (logically partitioned) params (the decoder reads max_text_len - 1 tokens)."""
  return base.init_params(model, rng, model.max_text_len - 1)


def predict_fns(model: Captioner) -> dict:
  """`models.CAPTION_FNS`, `CACHE_FNS`, `PARALLEL_FNS` (CapPa) and `CHUNKED_FNS` of this model."""

  def decode(params, tokens_BxL, visual_BxNxD=None):
    return model.apply({"params": params}, tokens_BxL, visual_BxNxD, method="decode")

  def decode_parallel(params, tokens_BxL, visual_BxNxD, parallel_B):
    """decode, without the causal mask for the examples where parallel_B is True."""
    return model.apply({"params": params}, tokens_BxL, visual_BxNxD, parallel_B,
                       method="decode")

  def decode_features(params, tokens_BxL, visual_BxNxD=None, parallel_B=None):
    return model.apply({"params": params}, tokens_BxL, visual_BxNxD, parallel_B,
                       method="decode_features")

  return {"encode_images": base.method_fn(model, "encode"), "decode": decode,
          **{name: base.method_fn(model, name) for name in ("cross_kv", "extend")},
          "decode_parallel": decode_parallel, "decode_features": decode_features,
          "decode_logits": base.method_fn(model, "decode_logits")}
