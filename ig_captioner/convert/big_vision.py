"""big_vision checkpoints (`.npz`, as its `save_checkpoint` wrote them: the param tree flattened,
names joined by '/', under `params/` or bare) as our `config.model` and params.

Supported: SigLIP two towers (`proj.image_text.two_towers` with the `vit` image tower and the
`proj.image_text.text_transformer` text tower) and plain ViT image towers (`vit` alone). The image
tower: a patch convolution with bias, learned position embeddings, no class token (or one added
after them, `pool_type='tok'`), pre-LN blocks, `encoder_norm`, pooled by a MAP head ('map'), the
mean ('gap') or the class token, then `head` (a Dense with bias, if the tower has an output
width). The text tower: token and learned position embeddings, the same blocks attending both
ways (no mask), `encoder_norm`, the features at the final position (`pool_type='last'`, texts
padded with their end token: `data/sticky_eos.py`), then `head`. Blocks stored scanned
(`encoderblock/...`, a leading depth axis) or one by one (`encoderblock_{i}/...`). LayerNorm
epsilon 1e-6 and tanh GELU: this codebase's defaults. The temperature `t` (log scale) and bias `b`.

A plain ViT becomes the image half of a two-tower run (`text_encoder=None`): no text tower, so
nothing to evaluate; its `image_tower` is what a captioner's encoder takes through
`config.init_from` (rename {'encoder': 'image_tower'}); the MAP head and `head` stay unused there.

Presets: `big_vision_presets.json` (SigLIP's English models, its provenance inside); or a JSON
file holding big_vision's `config.model` of a two-tower model, or of a ViT. The image size and
the text length follow from the weights' position embeddings (the image size is the preset's
`_image_size` note where that gives as many patches: So400m/14's 384, read as 378 by the tower).
"""

import dataclasses
import math
from typing import Callable

import ml_collections
import ml_dtypes
import numpy as np

from ig_captioner import errors
from ig_captioner.convert import model_files
from ig_captioner.convert import safetensors_io
from ig_captioner.models import layers

WeightsError = safetensors_io.WeightsError
# big_vision's named sizes (its models/vit.py `decode_variant`: Table 2 of arXiv:2106.04560, and
# So400m of arXiv:2305.13035) as (width, depth, mlp_dim, num_heads). Its 'mu' is not ours.
VARIANTS = {
    "mu": (32, 1, 128, 2), "Ti": (192, 12, 768, 3), "S": (384, 12, 1536, 6),
    "M": (512, 12, 2048, 8), "B": (768, 12, 3072, 12), "L": (1024, 24, 4096, 16),
    "So400m": (1152, 27, 4304, 16), "H": (1280, 32, 5120, 16), "g": (1408, 40, 6144, 16),
    "g-opt": (1536, 40, 6144, 16), "G": (1664, 48, 8192, 16), "G-opt": (1536, 48, 8192, 16),
    "e": (1792, 56, 15360, 16)}
# The constructor arguments of big_vision's towers, and those that change no weight.
_IMAGE_FIELDS = {"variant", "num_classes", "patch_size", "width", "depth", "mlp_dim", "num_heads",
                 "posemb", "rep_size", "dropout", "pool_type", "head_zeroinit", "scan",
                 "remat_policy", "dtype_mm"}
_TEXT_FIELDS = {"variant", "num_classes", "width", "depth", "mlp_dim", "num_heads", "dropout",
                "vocab_size", "pool_type", "scan", "remat_policy"}
_TWO_TOWER_FIELDS = {"image", "text", "image_model", "text_model", "out_dim", "temperature_init",
                     "bias_init"}
IMAGE_POOLINGS = {"map": "map", "gap": "mean", "tok": "cls"}  # big_vision's: ours.


def presets() -> dict[str, dict]:
  return model_files.read_presets("big_vision_presets.json")


def load_architecture(name_or_path: str) -> dict:
  """big_vision's `config.model` (two towers, or a ViT): a preset by name, or a JSON file."""
  return model_files.load(
      name_or_path, presets(),
      lambda arch: isinstance(arch, dict) and bool({"image", "text", "variant", "width"}
                                                   & set(arch)),
      "big_vision model", "a big_vision model config",
      "a two-tower config has image and text; a ViT's, variant or width")


# ------------------------------------------------------------------------ The architecture ---
@dataclasses.dataclass(frozen=True)
class Tower:
  """One tower as the weights hold it."""
  size: layers.TransformerSize
  pooling: str  # big_vision's pool_type.
  head: int | None  # Width of the `head` Dense; None: no head.
  patch: int = 0  # Image towers.
  vocab_size: int = 0  # Text towers.


@dataclasses.dataclass(frozen=True)
class Architecture:
  image: Tower
  text: Tower | None  # None: a plain ViT (the image half).
  temperature_init: float = 1.0
  bias_init: float | None = None


def _check_fields(cfg, allowed: set[str], where: str) -> dict:
  if not isinstance(cfg, dict):
    raise errors.ConfigError(f"{where} is {cfg!r}, not a dict of big_vision model fields")
  unknown = sorted(set(cfg) - allowed)
  if unknown:
    raise errors.ConfigError(f"{where} has fields big_vision's model does not take: {unknown}")
  return cfg


def _size(cfg: dict, where: str, defaults: tuple[int, int, int | None, int],
          with_patch: bool) -> tuple[layers.TransformerSize, int]:
  """(size, patch) of a tower config: its variant's, then its explicit fields (big_vision's
  order); `defaults` (width, depth, mlp_dim or None for 4 x width, heads) where neither says."""
  width, depth, mlp_dim, heads = defaults
  patch = 16
  variant = cfg.get("variant")
  if variant is not None:
    name, _, patch_text = str(variant).partition("/")
    if name not in VARIANTS or (patch_text and not (with_patch and patch_text.isdigit())):
      raise errors.ConfigError(f"{where}.variant={variant!r} is not a big_vision variant "
                               f"({'NAME/PATCH' if with_patch else 'NAME'}, NAME in "
                               f"{sorted(VARIANTS)})")
    width, depth, mlp_dim, heads = VARIANTS[name]
    patch = int(patch_text) if patch_text else patch
  width, depth, heads = (int(cfg.get(k, v)) for k, v in (
      ("width", width), ("depth", depth), ("num_heads", heads)))
  mlp_dim = cfg.get("mlp_dim", mlp_dim)
  mlp_dim = 4 * width if mlp_dim is None else int(mlp_dim)
  if "patch_size" in cfg:
    sizes = cfg["patch_size"]
    sizes = list(sizes) if isinstance(sizes, (list, tuple)) else [sizes, sizes]
    if len(set(sizes)) != 1:
      raise errors.ConfigError(f"{where}.patch_size={cfg['patch_size']} is not square")
    patch = int(sizes[0])
  if min(width, depth, mlp_dim, heads, patch) <= 0 or width % heads:
    raise errors.ConfigError(f"{where}: width {width}, depth {depth}, mlp_dim {mlp_dim}, "
                             f"{heads} heads, patch {patch} do not make a transformer")
  return layers.TransformerSize(width=width, depth=depth, mlp_dim=mlp_dim, num_heads=heads), patch


def _image_tower(cfg: dict, head: int | None, where: str) -> Tower:
  _check_fields(cfg, _IMAGE_FIELDS, where)
  size, patch = _size(cfg, where, (768, 12, None, 12), with_patch=True)
  pooling = cfg.get("pool_type", "gap")
  unsupported = []
  if pooling not in IMAGE_POOLINGS:
    unsupported.append(f"pool_type={pooling!r} (supported: {sorted(IMAGE_POOLINGS)})")
  if cfg.get("posemb", "learn") != "learn":
    unsupported.append(f"posemb={cfg['posemb']!r} (supported: 'learn')")
  if cfg.get("rep_size"):
    unsupported.append(f"rep_size={cfg['rep_size']!r} (a pre-logits layer)")
  if unsupported:
    raise errors.ConfigError(f"{where}: not supported by the converter: "
                             + "; ".join(unsupported))
  return Tower(size, pooling, cfg.get("num_classes", head), patch=patch)


def _text_tower(cfg: dict, head: int | None, where: str) -> Tower:
  _check_fields(cfg, _TEXT_FIELDS, where)
  size, _ = _size(cfg, where, (512, 12, 2048, 8), with_patch=False)
  pooling = cfg.get("pool_type", "last")
  if pooling != "last":
    raise errors.ConfigError(f"{where}.pool_type={pooling!r} is not supported by the converter "
                             "(supported: 'last')")
  return Tower(size, pooling, cfg.get("num_classes", head),
               vocab_size=int(cfg.get("vocab_size", 32_000)))


def is_two_towers(arch: dict) -> bool:
  return "image" in arch or "text" in arch


def architecture(arch: dict, state: dict[str, np.ndarray]) -> Architecture:
  """The towers of big_vision's `config.model` `arch` for the checkpoint params `state`
  (`checkpoint_params`): a plain ViT's weights take the image part of a two-tower config, and
  a ViT's head width comes from its weights where `arch` gives no num_classes."""
  arch = {k: v for k, v in arch.items() if not k.startswith("_")}  # The presets' notes.
  two_tower_weights = any(k.startswith(("img/", "txt/")) for k in state)
  if not is_two_towers(arch):
    if two_tower_weights:
      raise errors.ConfigError("the weights hold two towers (img/, txt/) but --model is a ViT "
                               "config: pass the two-tower config (or preset) they were "
                               "trained as")
    head = state["head/kernel"].shape[-1] if np.ndim(state.get("head/kernel")) == 2 else None
    return Architecture(_image_tower(arch, head, "--model"), None)
  _check_fields(arch, _TWO_TOWER_FIELDS, "--model")
  for field, wanted in (("image_model", "vit"),
                        ("text_model", "proj.image_text.text_transformer")):
    if arch.get(field, wanted) != wanted:
      raise errors.ConfigError(f"--model: {field}={arch[field]!r} is not supported by the "
                               f"converter (supported: {wanted!r})")
  out_dim = arch.get("out_dim", 128)
  out_dims = list(out_dim) if isinstance(out_dim, (list, tuple)) else [out_dim, out_dim]
  image = _image_tower(arch.get("image") or {}, out_dims[0], "--model image")
  if not two_tower_weights:
    return Architecture(image, None)
  text = _text_tower(arch.get("text") or {}, out_dims[1], "--model text")
  image_dim, text_dim = image.head or image.size.width, text.head or text.size.width
  if image_dim != text_dim:
    raise errors.ConfigError(f"--model gives image embeddings of width {image_dim} and text "
                             f"embeddings of width {text_dim}: out_dim must make them equal")
  bias_init = arch.get("bias_init")
  return Architecture(image, text, float(arch.get("temperature_init", 1.0)),
                      None if bias_init is None else float(bias_init))


def _positions(state: dict[str, np.ndarray], name: str) -> int:
  """The number of rows of the position embedding `name` ([1, rows, width]; its width is
  checked with every other array's shape)."""
  if name not in state or np.ndim(state[name]) != 3:
    raise WeightsError(f"the weights do not fit this architecture ("
                       f"{'mis-shaped' if name in state else 'missing'} {name}, a [1, rows, "
                       "width] array from which the input size follows): pass the --model they "
                       "were trained as")
  return int(state[name].shape[1])


def input_sizes(arch: Architecture, state: dict[str, np.ndarray],
                image_size: int | None = None) -> tuple[int, int | None]:
  """(image size, text length) from the weights' position embeddings. The image size is
  `image_size` (a preset's `_image_size`) where it gives as many patches: big_vision's patch
  convolution ignores the pixels beyond the last whole patch (So400m/14 reads 384 px as 378)."""
  img = "img/" if arch.text is not None else ""
  rows = _positions(state, f"{img}pos_embedding")
  grid = math.isqrt(rows)
  if grid * grid != rows:
    raise WeightsError(f"{img}pos_embedding has {rows} rows, not a square grid of patches")
  if not image_size or image_size // arch.image.patch != grid:
    image_size = grid * arch.image.patch
  text_len = None if arch.text is None else _positions(state, "txt/pos_embedding")
  return image_size, text_len


def model_config(arch: Architecture, image_size: int, text_len: int | None,
                 fallback_text: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Our `config.model` for `arch` at that image size and text length; the image half alone
  takes `fallback_text`'s (the base config's) vocab_size and max_text_len, which it ignores."""
  image, text = arch.image, arch.text
  config = dict(
      name="two_towers", encoder=f"{layers.size_name(image.size)}/{image.patch}",
      text_encoder=None, text_depth=None, embed_dim=image.head or image.size.width,
      vocab_size=fallback_text.vocab_size, image_size=image_size,
      max_text_len=fallback_text.max_text_len, dtype="float32",
      temperature_init=arch.temperature_init, bias_init=arch.bias_init,
      class_token=image.pooling == "tok", ln_pre=False, patch_bias=True,
      image_pooling=IMAGE_POOLINGS[image.pooling], activation="gelu_tanh", ln_eps=1e-6,
      projection_bias=True, image_projection=image.head is not None,
      drop_partial_patches=bool(image_size % image.patch))
  if text is not None:
    config.update(text_encoder=layers.size_name(text.size), vocab_size=text.vocab_size,
                  max_text_len=text_len, text_pooling="final", text_attention="bidirectional",
                  text_projection=text.head is not None)
  return ml_collections.ConfigDict(config)


# --------------------------------------------------------------------------- Param mapping ---
# {our param path: (their name, their shape, their array -> ours)}.
Rule = tuple[str, tuple[int, ...], Callable[[np.ndarray], np.ndarray]]


def _take(index: int | None, shape: tuple[int, ...]) -> Callable[[np.ndarray], np.ndarray]:
  """Block `index` of a scanned array (None: the whole array), reshaped to ours."""
  return lambda a: (a if index is None else a[index]).reshape(shape)


def _rule(name: str, theirs: tuple[int, ...], ours: tuple[int, ...],
          index: int | None = None, depth: int = 0) -> Rule:
  lead = () if index is None else (depth,)
  return (name, lead + theirs, _take(index, ours))


def _ln(ours: str, theirs: str, width: int, **scan) -> dict[str, Rule]:
  return {f"{ours}/{k}": _rule(f"{theirs}/{k}", (width,), (width,), **scan)
          for k in ("scale", "bias")}


def _attention(ours: str, theirs: str, size: layers.TransformerSize, **scan) -> dict[str, Rule]:
  d, h = size.width, size.num_heads
  k = d // h
  rules = {}
  for name in ("query", "key", "value"):
    rules[f"{ours}/{name}/kernel"] = _rule(f"{theirs}/{name}/kernel", (d, h, k), (d, d), **scan)
    rules[f"{ours}/{name}/bias"] = _rule(f"{theirs}/{name}/bias", (h, k), (d,), **scan)
  rules[f"{ours}/out/kernel"] = _rule(f"{theirs}/out/kernel", (h, k, d), (d, d), **scan)
  rules[f"{ours}/out/bias"] = _rule(f"{theirs}/out/bias", (d,), (d,), **scan)
  return rules


def _mlp(ours: str, theirs: str, size: layers.TransformerSize, **scan) -> dict[str, Rule]:
  d, f = size.width, size.mlp_dim
  return {f"{ours}/fc1/kernel": _rule(f"{theirs}/Dense_0/kernel", (d, f), (d, f), **scan),
          f"{ours}/fc1/bias": _rule(f"{theirs}/Dense_0/bias", (f,), (f,), **scan),
          f"{ours}/fc2/kernel": _rule(f"{theirs}/Dense_1/kernel", (f, d), (f, d), **scan),
          f"{ours}/fc2/bias": _rule(f"{theirs}/Dense_1/bias", (d,), (d,), **scan)}


def _encoder(ours: str, theirs: str, size: layers.TransformerSize,
             scanned: bool) -> dict[str, Rule]:
  """A big_vision `Encoder` (blocks and `encoder_norm`) onto our blocks and `ln_final`."""
  rules = {}
  for i in range(size.depth):
    block = f"{theirs}/encoderblock" if scanned else f"{theirs}/encoderblock_{i}"
    scan = dict(index=i, depth=size.depth) if scanned else {}
    rules |= _ln(f"{ours}/block{i}/ln_self", f"{block}/LayerNorm_0", size.width, **scan)
    rules |= _attention(f"{ours}/block{i}/self_attn", f"{block}/MultiHeadDotProductAttention_0",
                        size, **scan)
    rules |= _ln(f"{ours}/block{i}/ln_mlp", f"{block}/LayerNorm_1", size.width, **scan)
    rules |= _mlp(f"{ours}/block{i}/mlp", f"{block}/MlpBlock_0", size, **scan)
  return rules | _ln(f"{ours}/ln_final", f"{theirs}/encoder_norm", size.width)


def _head(ours: str, theirs: str, width: int, out: int) -> dict[str, Rule]:
  return {f"{ours}/kernel": _rule(f"{theirs}/kernel", (width, out), (width, out)),
          f"{ours}/bias": _rule(f"{theirs}/bias", (out,), (out,))}


def _scanned(state, encoder: str) -> bool:
  return any(k.startswith(f"{encoder}/encoderblock/") for k in state)


def rules(arch: Architecture, image_size: int, text_len: int | None,
          state: dict[str, np.ndarray]) -> dict[str, Rule]:
  """{our param path: (big_vision name, its shape, transform)}; blocks scanned where `state`
  has them so."""
  image, text = arch.image, arch.text
  img = "img/" if text is not None else ""
  d, p = image.size.width, image.patch
  patches = (image_size // p) ** 2
  out = {"image_tower/patch_embed/kernel": _rule(f"{img}embedding/kernel", (p, p, 3, d),
                                                 (p * p * 3, d)),
         "image_tower/patch_embed/bias": _rule(f"{img}embedding/bias", (d,), (d,))}
  if image.pooling == "tok":  # Ours adds positions to the class token too: its row is zero.
    out["image_tower/pos_embedding"] = (f"{img}pos_embedding", (1, patches, d),
                                        lambda a: np.concatenate([np.zeros((1, d)), a[0]]))
    out["image_tower/class_token"] = _rule(f"{img}cls", (1, 1, d), (d,))
  else:
    out["image_tower/pos_embedding"] = _rule(f"{img}pos_embedding", (1, patches, d),
                                             (patches, d))
  out |= _encoder("image_tower", f"{img}Transformer", image.size,
                  _scanned(state, f"{img}Transformer"))
  if image.pooling == "map":
    out["image_map_head/probe"] = _rule(f"{img}MAPHead_0/probe", (1, 1, d), (d,))
    out |= _attention("image_map_head/attn", f"{img}MAPHead_0/MultiHeadDotProductAttention_0",
                      image.size)
    out |= _ln("image_map_head/ln", f"{img}MAPHead_0/LayerNorm_0", d)
    out |= _mlp("image_map_head/mlp", f"{img}MAPHead_0/MlpBlock_0", image.size)
  if image.head is not None:
    out |= _head("image_projection", f"{img}head", d, image.head)
  if text is None:
    return out
  w = text.size.width
  out["text_tower/token_embedding"] = _rule("txt/Embed_0/embedding", (text.vocab_size, w),
                                            (text.vocab_size, w))
  out["text_tower/pos_embedding"] = _rule("txt/pos_embedding", (1, text_len, w), (text_len, w))
  out |= _encoder("text_tower", "txt/Encoder_0", text.size, _scanned(state, "txt/Encoder_0"))
  if text.head is not None:
    out |= _head("text_projection", "txt/head", w, text.head)
  out["log_temperature"] = _rule("t", (1,), ())
  if arch.bias_init is not None:
    out["bias"] = _rule("b", (1,), ())
  return out


# ------------------------------------------------------------------------------ Conversion ---
def checkpoint_params(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The params of a big_vision checkpoint's arrays: those under `params/` (a training
  checkpoint, whose optimizer state is left out) or `opt/target/` (older ones), else all (as
  big_vision publishes params alone). bfloat16 arrays, which numpy stores as 2-byte voids,
  are read as such."""
  for prefix in ("params/", "opt/target/"):
    if any(k.startswith(prefix) for k in state):
      state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
      break
  return {k: v.view(ml_dtypes.bfloat16) if v.dtype.kind == "V" and v.dtype.itemsize == 2 else v
          for k, v in state.items()}


def convert_params(state: dict[str, np.ndarray], arch: Architecture, image_size: int,
                   text_len: int | None,
                   shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
  """Our params {path: float32 array} from checkpoint params `state` (`checkpoint_params`).
  `shapes`: our params' shapes by path (the model `model_config` builds). WeightsError naming
  the missing, unexpected and mis-shaped arrays if the weights do not fit the architecture."""
  table = rules(arch, image_size, text_len, state)
  assert set(table) == set(shapes), set(table) ^ set(shapes)  # The mapping covers the model.
  wanted = {name: shape for name, shape, _ in table.values()}
  missing = set(wanted) - set(state)
  unexpected = set(state) - set(wanted)
  misshaped = sorted(f"{name} {tuple(state[name].shape)} (expected {shape})"
                     for name, shape in wanted.items()
                     if name in state and tuple(state[name].shape) != shape)
  model_files.check_fit(missing, unexpected, misshaped)
  params = {}
  for ours, (name, _, transform) in table.items():
    params[ours] = np.asarray(transform(np.asarray(state[name], np.float32)), np.float32)
    assert params[ours].shape == tuple(shapes[ours]), (ours, params[ours].shape, shapes[ours])
  if not all(np.isfinite(v).all() for v in params.values()):
    raise WeightsError("the weights hold NaN or infinite values: the file is corrupt; download "
                       "it again")
  return params
