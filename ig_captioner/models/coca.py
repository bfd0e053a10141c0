"""The CoCa family (Yu et al., *CoCa: Contrastive Captioners are Image-Text Foundation Models*,
2022): a ViT image encoder and a text decoder split in two halves.

- The unimodal half (causal self-attention only) reads the text; its features at the text's last
  non-pad token (which, behind the causal mask, sees the whole text, as CoCa's appended [CLS]
  does) give the text embedding. It never sees the image.
- The multimodal half continues from the unimodal features with causal self-attention and
  cross-attention to the visual tokens, and predicts the next token. Run without visual tokens
  it skips cross-attention, so the same parameters give log P(t) for IG scoring and the IG term.
- An attentional pooler (one learned query attending to the visual tokens) gives the image
  embedding. Both embeddings are projected to `embed_dim` and L2-normalised; the contrastive
  logits use a learned temperature, as CLIP's.

config.model: name='coca', encoder ('B/16'), decoder (a size name), unimodal_depth and
multimodal_depth (layers of each half), embed_dim, vocab_size, image_size, max_text_len, dtype,
temperature_init (1/0.07). Predict functions: `models.CAPTION_FNS`, `models.EMBED_FNS`,
`models.JOINT_FNS`.

Shape letters: B batch, H/W image size, C channels, N visual tokens, D width, L/T text length,
V vocabulary, E joint embedding width.
"""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from ig_captioner import errors
from ig_captioner import sharding
from ig_captioner.token_ids import PAD_ID
from ig_captioner.models import decoder
from ig_captioner.models import base
from ig_captioner.models import layers
from ig_captioner.models import mixed_precision
from ig_captioner.models import two_towers
from ig_captioner.models import vit


class AttentionPool(nn.Module):
  """One learned query attending to tokens_BxNxD; returns pooled_BxD."""
  num_heads: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens_BxNxD):
    width = tokens_BxNxD.shape[-1]
    query_1xD = self.param("query", nn.with_logical_partitioning(
        nn.initializers.normal(stddev=0.02), (sharding.POSITIONS, sharding.EMBED)), (1, width),
                           jnp.float32)
    query_Bx1xD = jnp.broadcast_to(query_1xD.astype(self.dtype)[None],
                                   (tokens_BxNxD.shape[0], 1, width))
    pooled_Bx1xD = layers.MultiHeadAttention(self.num_heads, width, self.dtype, name="attn")(
        query_Bx1xD, tokens_BxNxD)
    return layers.layer_norm(self.dtype, "ln")(pooled_Bx1xD)[:, 0]


class CoCa(nn.Module):
  encoder_variant: str
  decoder_size: layers.TransformerSize
  unimodal_depth: int
  multimodal_depth: int
  embed_dim: int
  vocab_size: int
  image_size: int
  max_text_len: int
  temperature_init: float
  dtype: Any = jnp.float32

  def setup(self):
    size = self.decoder_size
    self.encoder = vit.VisionEncoder(self.encoder_variant, self.image_size, self.dtype)
    self.image_pool = AttentionPool(vit.parse_variant(self.encoder_variant)[0].num_heads,
                                    self.dtype)
    self.image_projection = layers.dense(self.embed_dim, (sharding.EMBED, sharding.JOINT_EMBED),
                                         self.dtype, "image_projection", use_bias=False)
    self.text_embedding = layers.TextEmbedding(self.vocab_size, self.max_text_len, size.width,
                                               self.dtype)
    self.unimodal = [layers.TransformerBlock(size, causal=True, dtype=self.dtype,
                                             name=f"unimodal{i}")
                     for i in range(self.unimodal_depth)]
    self.ln_text = layers.layer_norm(self.dtype, "ln_text")
    self.text_projection = layers.dense(self.embed_dim, (sharding.EMBED, sharding.JOINT_EMBED),
                                        self.dtype, "text_projection", use_bias=False)
    self.multimodal = [layers.TransformerBlock(size, causal=True, dtype=self.dtype,
                                               name=f"multimodal{i}")
                       for i in range(self.multimodal_depth)]
    self.ln_final = layers.layer_norm(self.dtype, "ln_final")
    self.head = layers.dense(self.vocab_size, (sharding.EMBED, sharding.VOCAB), self.dtype, "head",
                             kernel_init=nn.initializers.zeros_init())
    self.log_temperature = self.param(
        "log_temperature", nn.with_logical_partitioning(
            nn.initializers.constant(math.log(self.temperature_init)), ()), (), jnp.float32)

  def _unimodal(self, tokens_BxL):
    """Unimodal features x_BxLxD (positions embedded for up to max_text_len tokens)."""
    x_BxLxD = self.text_embedding(tokens_BxL)
    for block in self.unimodal:
      x_BxLxD = block(x_BxLxD)
    return x_BxLxD

  def _text_embedding(self, x_BxLxD, tokens_BxL):
    last_B = jnp.maximum(jnp.sum(tokens_BxL != PAD_ID, axis=1) - 1, 0)
    x_BxD = jnp.take_along_axis(x_BxLxD, last_B[:, None, None], axis=1)[:, 0]
    return two_towers.normalize(self.text_projection(self.ln_text(x_BxD)))

  def _multimodal(self, x_BxLxD, visual_BxNxD):
    if visual_BxNxD is not None:
      visual_BxNxD = nn.with_logical_constraint(visual_BxNxD.astype(self.dtype),
                                                sharding.BATCH_LENGTH_EMBED)
    for block in self.multimodal:
      x_BxLxD = block(x_BxLxD, visual_BxNxD)
    logits_BxLxV = self.head(self.ln_final(x_BxLxD))
    return nn.with_logical_constraint(logits_BxLxV.astype(jnp.float32),
                                      sharding.BATCH_LENGTH_VOCAB)

  def cross_kv(self, visual_BxNxD):
    """Cross-attention keys/values per decoder block (None for the unimodal half)."""
    return ((None,) * self.unimodal_depth +
            tuple(block.cross_kv(visual_BxNxD) for block in self.multimodal))

  def extend(self, tokens_BxCxQ, positions_Q, contexts=None, cross_kvs=None):
    """The cached path through both halves (see `decoder.TextDecoder.extend`)."""
    x_BxCxQxD, new_kvs = decoder.extend_blocks(
        (*self.unimodal, *self.multimodal), self.text_embedding(tokens_BxCxQ, positions_Q),
        contexts, cross_kvs)
    return self.head(self.ln_final(x_BxCxQxD)).astype(jnp.float32), new_kvs

  def encode(self, images_BxHxWxC):
    return self.encoder(images_BxHxWxC)

  def decode(self, tokens_BxL, visual_BxNxD=None):
    return self._multimodal(self._unimodal(tokens_BxL), visual_BxNxD)

  def embed_images(self, images_BxHxWxC):
    return self._embed_visual(self.encode(images_BxHxWxC))

  def _embed_visual(self, visual_BxNxD):
    return two_towers.normalize(self.image_projection(self.image_pool(visual_BxNxD)))

  def embed_texts(self, tokens_BxT):
    return self._text_embedding(self._unimodal(tokens_BxT), tokens_BxT)

  def logit_scale_and_bias(self):
    return jnp.exp(self.log_temperature), None

  def __call__(self, images_BxHxWxC, tokens_BxT):
    """The training forward, in one pass: (logits over tokens[:, :-1] given the image, z_img,
    z_txt). The unimodal half reads the whole text once: behind the causal mask its first T-1
    positions are the decoder input's."""
    visual_BxNxD = self.encode(images_BxHxWxC)
    x_BxTxD = self._unimodal(tokens_BxT)
    logits_BxLxV = self._multimodal(x_BxTxD[:, :-1], visual_BxNxD)
    self.logit_scale_and_bias()  # Creates the temperature at init.
    return logits_BxLxV, self._embed_visual(visual_BxNxD), self._text_embedding(x_BxTxD,
                                                                                 tokens_BxT)


def build(model_config: ml_collections.ConfigDict) -> CoCa:
  """Builds CoCa from `config.model`, checking its values."""
  vit.check(model_config.encoder, model_config.image_size)
  size = layers.named_size(model_config.decoder, "model.decoder")
  for field in ("unimodal_depth", "multimodal_depth", "embed_dim"):
    if not isinstance(model_config.get(field), int) or model_config[field] <= 0:
      raise errors.ConfigError(f"config.model.{field}={model_config.get(field)!r} must be a "
                               "positive integer")
  base.check_temperature_init(model_config, "CoCa, as CLIP: 1/0.07")
  base.check_max_text_len(model_config)
  return CoCa(
      encoder_variant=model_config.encoder, decoder_size=size,
      unimodal_depth=model_config.unimodal_depth, multimodal_depth=model_config.multimodal_depth,
      embed_dim=model_config.embed_dim, vocab_size=model_config.vocab_size,
      image_size=model_config.image_size, max_text_len=model_config.max_text_len,
      temperature_init=float(model_config.temperature_init),
      dtype=mixed_precision.compute_dtype(model_config.dtype))


def init_params(model: CoCa, rng: jax.Array):
  """Boxed (logically partitioned) params from dummy inputs of the model's shapes."""
  return base.init_params(model, rng, model.max_text_len)


def predict_fns(model: CoCa) -> dict:
  """`models.CAPTION_FNS`, `CACHE_FNS`, `EMBED_FNS` and `JOINT_FNS` for this model."""

  def decode(params, tokens_BxL, visual_BxNxD=None):
    return model.apply({"params": params}, tokens_BxL, visual_BxNxD, method="decode")

  def caption_and_embed(params, images_BxHxWxC, tokens_BxT):
    return model.apply({"params": params}, images_BxHxWxC, tokens_BxT)

  return {"encode_images": base.method_fn(model, "encode"), "decode": decode,
          **{name: base.method_fn(model, name) for name in ("cross_kv", "extend")},
          **{name: base.method_fn(model, name)
             for name in ("embed_images", "embed_texts", "logit_scale_and_bias")},
          "caption_and_embed": caption_and_embed}
