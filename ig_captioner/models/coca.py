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

Optional fields, for checkpoints of other codebases (defaults: this codebase's CoCa, above):
- `pooler_queries` N (1): with N > 1 the pooler's N outputs (layer-normed) are what `encode`
  gives: the first is the image embedding's, the other N-1 are the visual tokens the multimodal
  half cross-attends to (open_clip's CoCa: 256 queries) instead of the ViT's tokens;
  `pooler_width` (the encoder's width; open_clip: embed_dim), `pooler_heads` (the encoder's),
  `pooler_norms` (False; True: layer norms on the queries and on the tokens before attention).
- `text_pooling`: 'last' (the last non-pad token, above), 'cls' (a learned token appended after
  the text at position max_text_len, open_clip's `embed_cls`; as open_clip's checkpoints were
  trained, key i > 0 is visible to it only if token i-1 is not padding, so it sees the text, the
  first pad and, unpadded, itself), 'cls_valid' (the same token seeing the non-pad tokens and
  itself: open_clip's `correct_cls_mask`). Text given to it is padded to max_text_len first.
- `cross_layers`: 'fused' (self-attention, cross-attention and MLP in one block) or 'separate'
  (a self-attention block, then a cross-attention block with its own MLP: `cross_block`).
- `head_bias` (True), `encoder_ln_final` and the ViT options (`vit.options`), `activation`
  and `ln_eps` (`layers.block_style`, every block and layer norm).

Shape letters: B batch, H/W image size, C channels, N visual tokens, D width, L/T text length,
V vocabulary, E joint embedding width.
"""

import dataclasses
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
from ig_captioner.models import cross_block
from ig_captioner.models import layers
from ig_captioner.models import mixed_precision
from ig_captioner.models import two_towers
from ig_captioner.models import vit


TEXT_POOLINGS = ("last", "cls", "cls_valid")
CROSS_LAYERS = ("fused", "separate")


@dataclasses.dataclass(frozen=True)
class Options:
  """What differs between CoCa checkpoints of different codebases (see the module docstring)."""
  pooler_queries: int = 1
  pooler_width: int | None = None
  pooler_heads: int | None = None
  pooler_norms: bool = False
  text_pooling: str = "last"
  cross_layers: str = "fused"
  head_bias: bool = True


class AttentionPool(nn.Module):
  """Learned queries attending to tokens_BxNxE; returns the layer-normed pooled_BxQxD."""
  num_queries: int
  width: int
  num_heads: int
  norms: bool = False
  dtype: Any = jnp.float32
  style: layers.BlockStyle = layers.BlockStyle()

  @nn.compact
  def __call__(self, tokens_BxNxE):
    query_QxD = self.param("query", nn.with_logical_partitioning(
        nn.initializers.normal(stddev=0.02), (sharding.POSITIONS, sharding.EMBED)),
                           (self.num_queries, self.width), jnp.float32)
    query_QxD = query_QxD.astype(self.dtype)
    eps = self.style.ln_eps
    if self.norms:
      query_QxD = layers.layer_norm(self.dtype, "ln_query", eps)(query_QxD)
      tokens_BxNxE = layers.layer_norm(self.dtype, "ln_tokens", eps)(tokens_BxNxE)
    query_BxQxD = jnp.broadcast_to(query_QxD[None], (tokens_BxNxE.shape[0], *query_QxD.shape))
    pooled_BxQxD = layers.MultiHeadAttention(self.num_heads, self.width, self.dtype, name="attn")(
        query_BxQxD, tokens_BxNxE)
    return layers.layer_norm(self.dtype, "ln", eps)(pooled_BxQxD)


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
  style: layers.BlockStyle = layers.BlockStyle()
  encoder_options: vit.Options = vit.Options()
  options: Options = Options()

  @property
  def _has_cls(self) -> bool:
    return self.options.text_pooling != "last"

  def setup(self):
    size, style, opts = self.decoder_size, self.style, self.options
    encoder_size = vit.parse_variant(self.encoder_variant)[0]
    self.encoder = vit.VisionEncoder(self.encoder_variant, self.image_size, self.dtype,
                                     style=style, options=self.encoder_options)
    self.image_pool = AttentionPool(
        opts.pooler_queries, opts.pooler_width or encoder_size.width,
        opts.pooler_heads or encoder_size.num_heads, opts.pooler_norms, self.dtype, style)
    self.image_projection = layers.dense(self.embed_dim, (sharding.EMBED, sharding.JOINT_EMBED),
                                         self.dtype, "image_projection", use_bias=False)
    self.text_embedding = layers.TextEmbedding(self.vocab_size,
                                               self.max_text_len + self._has_cls, size.width,
                                               self.dtype)
    if self._has_cls:
      self.text_cls = self.param("text_cls", nn.with_logical_partitioning(
          nn.initializers.normal(stddev=0.01), (sharding.EMBED,)), (size.width,), jnp.float32)
    self.unimodal = [layers.TransformerBlock(size, causal=True, dtype=self.dtype, style=style,
                                             name=f"unimodal{i}")
                     for i in range(self.unimodal_depth)]
    self.ln_text = layers.layer_norm(self.dtype, "ln_text", style.ln_eps)
    self.text_projection = layers.dense(self.embed_dim, (sharding.EMBED, sharding.JOINT_EMBED),
                                        self.dtype, "text_projection", use_bias=False)
    layer = (cross_block.SelfThenCrossLayer if opts.cross_layers == "separate"
             else layers.TransformerBlock)
    self.multimodal = [layer(size, causal=True, dtype=self.dtype, style=style,
                             name=f"multimodal{i}") for i in range(self.multimodal_depth)]
    self.ln_final = layers.layer_norm(self.dtype, "ln_final", style.ln_eps)
    self.head = layers.dense(self.vocab_size, (sharding.EMBED, sharding.VOCAB), self.dtype, "head",
                             use_bias=opts.head_bias, kernel_init=nn.initializers.zeros_init())
    self.log_temperature = self.param(
        "log_temperature", nn.with_logical_partitioning(
            nn.initializers.constant(math.log(self.temperature_init)), ()), (), jnp.float32)

  def _unimodal(self, tokens_BxL):
    """Unimodal features x_BxLxD (positions embedded for up to max_text_len tokens)."""
    x_BxLxD = self.text_embedding(tokens_BxL)
    for block in self.unimodal:
      x_BxLxD = block(x_BxLxD)
    return x_BxLxD

  def _unimodal_with_cls(self, tokens_BxT):
    """Unimodal features x_BxLxD of the text padded to L = max_text_len, then the appended
    class token's c_BxD (`text_pooling` 'cls' or 'cls_valid')."""
    pad = self.max_text_len - tokens_BxT.shape[1]
    tokens_BxL = jnp.pad(tokens_BxT, ((0, 0), (0, pad)), constant_values=PAD_ID)
    valid_BxL = tokens_BxL != PAD_ID
    always_Bx1 = jnp.ones_like(valid_BxL[:, :1])
    keys_BxS = jnp.concatenate((always_Bx1, valid_BxL) if self.options.text_pooling == "cls"
                               else (valid_BxL, always_Bx1), axis=1)  # S = L + 1.
    allowed_BxSxS = jnp.broadcast_to(keys_BxS[:, None, :], (*keys_BxS.shape, keys_BxS.shape[1]))
    x_BxSxD = self.text_embedding(tokens_BxL, appended_D=self.text_cls)
    for block in self.unimodal:
      x_BxSxD = block(x_BxSxD, allowed_BxLxL=allowed_BxSxS)
    return x_BxSxD[:, :-1], x_BxSxD[:, -1]

  def _project_text(self, x_BxD):
    return two_towers.normalize(self.text_projection(self.ln_text(x_BxD)))

  def _text_embedding(self, x_BxLxD, tokens_BxL):
    last_B = jnp.maximum(jnp.sum(tokens_BxL != PAD_ID, axis=1) - 1, 0)
    return self._project_text(jnp.take_along_axis(x_BxLxD, last_B[:, None, None], axis=1)[:, 0])

  def _decoder_visual(self, visual_BxNxD):
    """The tokens the multimodal half attends to: `encode`'s, less the embedding's pooled one
    when the pooler has several queries."""
    return visual_BxNxD[:, 1:] if self.options.pooler_queries > 1 else visual_BxNxD

  def _multimodal(self, x_BxLxD, visual_BxNxD):
    if visual_BxNxD is not None:
      visual_BxNxD = nn.with_logical_constraint(
          self._decoder_visual(visual_BxNxD).astype(self.dtype), sharding.BATCH_LENGTH_EMBED)
    for block in self.multimodal:
      x_BxLxD = block(x_BxLxD, visual_BxNxD)
    logits_BxLxV = self.head(self.ln_final(x_BxLxD))
    return nn.with_logical_constraint(logits_BxLxV.astype(jnp.float32),
                                      sharding.BATCH_LENGTH_VOCAB)

  def cross_kv(self, visual_BxNxD):
    """Cross-attention keys/values per decoder block (None for the unimodal half)."""
    visual_BxNxD = self._decoder_visual(visual_BxNxD)
    return ((None,) * self.unimodal_depth +
            tuple(block.cross_kv(visual_BxNxD) for block in self.multimodal))

  def extend(self, tokens_BxCxQ, positions_Q, contexts=None, cross_kvs=None):
    """The cached path through both halves (see `decoder.TextDecoder.extend`)."""
    x_BxCxQxD, new_kvs = decoder.extend_blocks(
        (*self.unimodal, *self.multimodal), self.text_embedding(tokens_BxCxQ, positions_Q),
        contexts, cross_kvs)
    return self.head(self.ln_final(x_BxCxQxD)).astype(jnp.float32), new_kvs

  def encode(self, images_BxHxWxC):
    """Visual tokens: the ViT's, or with several pooler queries the pooler's outputs."""
    visual_BxNxD = self.encoder(images_BxHxWxC)
    return self.image_pool(visual_BxNxD) if self.options.pooler_queries > 1 else visual_BxNxD

  def decode(self, tokens_BxL, visual_BxNxD=None):
    return self._multimodal(self._unimodal(tokens_BxL), visual_BxNxD)

  def embed_images(self, images_BxHxWxC):
    return self._embed_visual(self.encode(images_BxHxWxC))

  def _embed_visual(self, visual_BxNxD):
    pooled_BxD = (visual_BxNxD[:, 0] if self.options.pooler_queries > 1
                  else self.image_pool(visual_BxNxD)[:, 0])
    return two_towers.normalize(self.image_projection(pooled_BxD))

  def embed_texts(self, tokens_BxT):
    if self._has_cls:
      return self._project_text(self._unimodal_with_cls(tokens_BxT)[1])
    return self._text_embedding(self._unimodal(tokens_BxT), tokens_BxT)

  def logit_scale_and_bias(self):
    return jnp.exp(self.log_temperature), None

  def __call__(self, images_BxHxWxC, tokens_BxT):
    """The training forward, in one pass: (logits over tokens[:, :-1] given the image, z_img,
    z_txt). The unimodal half reads the whole text once: behind the causal mask its first T-1
    positions are the decoder input's."""
    visual_BxNxD = self.encode(images_BxHxWxC)
    if self._has_cls:
      x_BxLxD, cls_BxD = self._unimodal_with_cls(tokens_BxT)
    else:
      x_BxLxD = self._unimodal(tokens_BxT)
    logits_BxLxV = self._multimodal(x_BxLxD[:, :tokens_BxT.shape[1] - 1], visual_BxNxD)
    self.logit_scale_and_bias()  # Creates the temperature at init.
    z_img_BxE = self._embed_visual(visual_BxNxD)
    z_txt_BxE = (self._project_text(cls_BxD) if self._has_cls
                 else self._text_embedding(x_BxLxD, tokens_BxT))
    return logits_BxLxV, z_img_BxE, z_txt_BxE


def _positive_or_none(model_config, field: str):
  value = model_config.get(field)
  if value is not None and (not isinstance(value, int) or value <= 0):
    raise errors.ConfigError(f"config.model.{field}={value!r} must be a positive integer")
  return value


def options(model_config: ml_collections.ConfigDict) -> Options:
  """The CoCa Options of `config.model` (absent fields: the defaults), checked."""
  queries = _positive_or_none(model_config, "pooler_queries") or 1
  text_pooling = model_config.get("text_pooling", "last")
  if text_pooling not in TEXT_POOLINGS:
    raise errors.ConfigError(f"config.model.text_pooling={text_pooling!r} is not one of "
                             f"{TEXT_POOLINGS}")
  cross_layers = model_config.get("cross_layers", "fused")
  if cross_layers not in CROSS_LAYERS:
    raise errors.ConfigError(f"config.model.cross_layers={cross_layers!r} is not one of "
                             f"{CROSS_LAYERS}")
  return Options(pooler_queries=queries,
                 pooler_width=_positive_or_none(model_config, "pooler_width"),
                 pooler_heads=_positive_or_none(model_config, "pooler_heads"),
                 pooler_norms=bool(model_config.get("pooler_norms", False)),
                 text_pooling=text_pooling, cross_layers=cross_layers,
                 head_bias=bool(model_config.get("head_bias", True)))


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
  opts = options(model_config)
  encoder_size = vit.parse_variant(model_config.encoder)[0]
  if (opts.pooler_width or encoder_size.width) % (opts.pooler_heads or encoder_size.num_heads):
    raise errors.ConfigError(f"config.model.pooler_width={opts.pooler_width} is not divisible "
                             f"by pooler_heads={opts.pooler_heads}")
  return CoCa(
      encoder_variant=model_config.encoder, decoder_size=size,
      unimodal_depth=model_config.unimodal_depth, multimodal_depth=model_config.multimodal_depth,
      embed_dim=model_config.embed_dim, vocab_size=model_config.vocab_size,
      image_size=model_config.image_size, max_text_len=model_config.max_text_len,
      temperature_init=float(model_config.temperature_init),
      dtype=mixed_precision.compute_dtype(model_config.dtype),
      style=layers.block_style(model_config), encoder_options=vit.options(model_config),
      options=opts)


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
