"""The two-tower family (CLIP, SigLIP): a ViT image tower and a text tower, each pooled,
projected to a joint space of `embed_dim` and L2-normalised, plus the learned parameters of the
contrastive logits `z_img . z_txt * exp(log_temperature) + bias`.

config.model: name='two_towers', encoder ('B/16'), text_encoder (a size name), text_depth (None:
the size's), embed_dim, vocab_size, image_size, max_text_len, dtype, temperature_init (the initial
exp(log_temperature): 1/0.07 for CLIP, 10 for SigLIP), bias_init (None: no bias, as CLIP; -10 for
SigLIP). Predict functions: `models.EMBED_FNS`.

Pooling: the image tower averages its visual tokens (`image_pooling='mean'`, global average
pooling, the default), takes its class token (`'cls'`, with `class_token=True`: CLIP's) or
attends to them with a learned probe (`'map'`, `map_head.py`: SigLIP's); the text tower is
causal and takes the features of the text's last non-pad token (`text_encoder`). Each is
followed by a linear projection (no bias) to the joint space.

Optional fields for checkpoints of other codebases (absent: the defaults, this codebase's own):
`class_token`, `ln_pre`, `patch_bias` (`vit.Options`), `activation`, `ln_eps`
(`layers.BlockStyle`), `text_pooling` ('last', 'argmax' or 'final', `text_encoder`),
`text_attention` ('causal' or 'bidirectional': big_vision's text tower), `projection_bias`
(False; True: both projections have a bias, as big_vision's `head`), `image_projection` and
`text_projection` (True; False: no projection, the pooled features are the embedding and
`embed_dim` must be the tower's width, as SigLIP's image tower), `drop_partial_patches` (False;
True: an `image_size` that is not a multiple of the patch size, the pixels beyond the last whole
patch ignored, as big_vision's patch convolution does: SigLIP So400m/14 at 384 px sees 378).
`text_encoder=None` builds the image half alone (an image tower converted without text: its only
predict function is `embed_images`; `vocab_size` and `max_text_len` are then unused).

Shape letters: B batch, H/W image size, C channels, N visual tokens, D tower width, L text
length, E joint embedding width.
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
from ig_captioner.models import base
from ig_captioner.models import layers
from ig_captioner.models import map_head
from ig_captioner.models import mixed_precision
from ig_captioner.models import text_encoder
from ig_captioner.models import vit

IMAGE_POOLINGS = ("mean", "cls", "map")
TEXT_ATTENTIONS = ("causal", "bidirectional")


def normalize(x_BxE):
  """Rows scaled to unit L2 norm (in float32)."""
  x_BxE = x_BxE.astype(jnp.float32)
  return x_BxE * jax.lax.rsqrt(jnp.sum(x_BxE * x_BxE, axis=-1, keepdims=True) + 1e-12)


@dataclasses.dataclass(frozen=True)
class Options:
  """The optional fields of the module docstring; the defaults are this codebase's own."""
  image_pooling: str = "mean"
  text_pooling: str = "last"
  text_causal: bool = True
  projection_bias: bool = False
  image_projection: bool = True
  text_projection: bool = True
  drop_partial_patches: bool = False


class TwoTowers(nn.Module):
  encoder_variant: str
  text_size: layers.TransformerSize | None  # None: the image half alone.
  embed_dim: int
  vocab_size: int
  image_size: int
  max_text_len: int
  temperature_init: float
  bias_init: float | None
  dtype: Any = jnp.float32
  style: layers.BlockStyle = layers.BlockStyle()
  vit_options: vit.Options = vit.Options()
  options: Options = Options()

  @property
  def has_text(self) -> bool:
    return self.text_size is not None

  @property
  def tower_image_size(self) -> int:
    """The image size the ViT reads: `image_size`, less the partial patches dropped."""
    if not self.options.drop_partial_patches:
      return self.image_size
    return self.image_size - self.image_size % vit.parse_variant(self.encoder_variant)[1]

  def _projection(self, name: str):
    return layers.dense(self.embed_dim, (sharding.EMBED, sharding.JOINT_EMBED), self.dtype, name,
                        use_bias=self.options.projection_bias)

  def setup(self):
    opts = self.options
    self.image_tower = vit.VisionEncoder(self.encoder_variant, self.tower_image_size, self.dtype,
                                         style=self.style, options=self.vit_options)
    if opts.image_pooling == "map":
      self.image_map_head = map_head.MapHead(vit.parse_variant(self.encoder_variant)[0],
                                             self.dtype, self.style)
    if opts.image_projection:
      self.image_projection = self._projection("image_projection")
    if not self.has_text:
      return
    self.text_tower = text_encoder.TextEncoder(self.text_size, self.vocab_size,
                                               self.max_text_len, self.dtype, self.style,
                                               opts.text_pooling, opts.text_causal)
    if opts.text_projection:
      self.text_projection = self._projection("text_projection")
    # Scalars: no axes to name, replicated everywhere.
    self.log_temperature = self.param(
        "log_temperature", nn.with_logical_partitioning(
            nn.initializers.constant(math.log(self.temperature_init)), ()), (), jnp.float32)
    if self.bias_init is not None:
      self.bias = self.param("bias", nn.with_logical_partitioning(
          nn.initializers.constant(self.bias_init), ()), (), jnp.float32)

  def embed_images(self, images_BxHxWxC):
    if self.options.drop_partial_patches:
      if images_BxHxWxC.shape[1:3] != (self.image_size, self.image_size):
        raise ValueError(f"images have shape {images_BxHxWxC.shape}, expected "
                         f"(B, {self.image_size}, {self.image_size}, C)")
      size = self.tower_image_size  # The bottom and right rows of pixels are dropped.
      images_BxHxWxC = images_BxHxWxC[:, :size, :size]
    visual_BxNxD = self.image_tower(images_BxHxWxC)
    if self.options.image_pooling == "cls":
      pooled_BxD = visual_BxNxD[:, 0]
    elif self.options.image_pooling == "map":
      pooled_BxD = self.image_map_head(visual_BxNxD)
    else:
      pooled_BxD = jnp.mean(visual_BxNxD, axis=1)
    return normalize(self.image_projection(pooled_BxD) if self.options.image_projection
                     else pooled_BxD)

  def embed_texts(self, tokens_BxL):
    pooled_BxD = self.text_tower(tokens_BxL)
    return normalize(self.text_projection(pooled_BxD) if self.options.text_projection
                     else pooled_BxD)

  def logit_scale_and_bias(self):
    return jnp.exp(self.log_temperature), (self.bias if self.bias_init is not None else None)

  def __call__(self, images_BxHxWxC, tokens_BxL):
    """Runs every part; used to create every parameter at init."""
    if not self.has_text:
      return self.embed_images(images_BxHxWxC)
    return (self.embed_images(images_BxHxWxC), self.embed_texts(tokens_BxL),
            self.logit_scale_and_bias())


def _choice(model_config, field: str, default: str, known: tuple[str, ...]) -> str:
  value = model_config.get(field, default)
  if value not in known:
    raise errors.ConfigError(f"config.model.{field}={value!r} is not one of {known}")
  return value


def options(model_config: ml_collections.ConfigDict) -> Options:
  """The Options of `config.model` (absent fields: the defaults), checked."""
  return Options(
      image_pooling=_choice(model_config, "image_pooling", "mean", IMAGE_POOLINGS),
      text_pooling=_choice(model_config, "text_pooling", "last", text_encoder.POOLINGS),
      text_causal=_choice(model_config, "text_attention", "causal", TEXT_ATTENTIONS) == "causal",
      projection_bias=bool(model_config.get("projection_bias", False)),
      image_projection=bool(model_config.get("image_projection", True)),
      text_projection=bool(model_config.get("text_projection", True)),
      drop_partial_patches=bool(model_config.get("drop_partial_patches", False)))


def build(model_config: ml_collections.ConfigDict) -> TwoTowers:
  """Builds the two towers from `config.model`, checking its values."""
  opts = options(model_config)
  image_size = model_config.image_size
  if opts.drop_partial_patches:
    image_size -= image_size % vit.parse_variant(model_config.encoder)[1]
  vit.check(model_config.encoder, image_size)
  has_text = model_config.get("text_encoder") is not None
  size = layers.named_size(model_config.text_encoder, "model.text_encoder",
                           model_config.get("text_depth")) if has_text else None
  if model_config.embed_dim <= 0:
    raise errors.ConfigError(f"config.model.embed_dim={model_config.embed_dim} must be positive")
  base.check_temperature_init(model_config, "CLIP: 1/0.07; SigLIP: 10")
  if has_text:
    base.check_max_text_len(model_config)
  bias_init = model_config.get("bias_init")
  vit_options = vit.options(model_config)
  if opts.image_pooling == "cls" and not vit_options.class_token:
    raise errors.ConfigError("config.model.image_pooling='cls' needs config.model.class_token="
                             "True (the token it pools)")
  widths = {"image": vit.parse_variant(model_config.encoder)[0].width,
            "text": size.width if has_text else None}
  for tower, projected in (("image", opts.image_projection), ("text", opts.text_projection)):
    if not projected and widths[tower] not in (None, model_config.embed_dim):
      raise errors.ConfigError(
          f"config.model.{tower}_projection=False needs config.model.embed_dim equal to the "
          f"{tower} tower's width {widths[tower]}, not {model_config.embed_dim}")
  return TwoTowers(
      encoder_variant=model_config.encoder, text_size=size, embed_dim=model_config.embed_dim,
      vocab_size=model_config.vocab_size, image_size=model_config.image_size,
      max_text_len=model_config.max_text_len,
      temperature_init=float(model_config.temperature_init),
      bias_init=None if bias_init is None else float(bias_init),
      dtype=mixed_precision.compute_dtype(model_config.dtype),
      style=layers.block_style(model_config), vit_options=vit_options, options=opts)


def init_params(model: TwoTowers, rng: jax.Array):
  """Boxed (logically partitioned) params from dummy inputs of the model's shapes."""
  return base.init_params(model, rng, model.max_text_len if model.has_text else 1)


def predict_fns(model: TwoTowers) -> dict:
  """`models.EMBED_FNS` for this model (`embed_images` alone for the image half)."""
  names = ("embed_images", "embed_texts", "logit_scale_and_bias") if model.has_text else (
      "embed_images",)
  return {name: base.method_fn(model, name) for name in names}
