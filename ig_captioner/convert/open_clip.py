"""open_clip checkpoints: an architecture (a preset name or an open_clip model-config JSON) as
our `config.model`, and an open_clip state dict as our params.

Supported: CLIP-style two towers (`open_clip.CLIP` without `custom_text`): a ViT with class
token, `ln_pre`, `ln_post` and a projection; a causal text transformer pooled at its end token
(the highest id: open_clip's `argmax` pooling); exact GELU or QuickGELU; torch's layer-norm
epsilon 1e-5. Presets: `open_clip_presets.json` (copied from open_clip's model configs, its
provenance inside).
"""

import json
import os
from typing import Callable

import ml_collections
import numpy as np

from ig_captioner import errors
from ig_captioner import paths
from ig_captioner.convert import safetensors_io
from ig_captioner.models import layers

_PRESETS_FILE = os.path.join(os.path.dirname(__file__), "open_clip_presets.json")
TORCH_LN_EPS = 1e-5
# open_clip's defaults for its CLIP models (OPENAI_DATASET_MEAN / _STD in its constants.py),
# unless a model config names others (its `preprocess_cfg`'s `mean` and `std`).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# In open_clip's state dicts but not weights: the causal mask buffer of older versions.
_IGNORED = ("attn_mask",)


def presets() -> dict[str, dict]:
  with open(_PRESETS_FILE, encoding="utf-8") as f:
    return {k: v for k, v in json.load(f).items() if not k.startswith("_")}


def load_architecture(name_or_path: str) -> dict:
  """An open_clip model config: a preset by name, or a model-config JSON file by path."""
  known = presets()
  if name_or_path in known:
    return known[name_or_path]
  if name_or_path.endswith(".json"):
    if not paths.path(name_or_path).exists():
      raise errors.ConfigError(f"--model={name_or_path}: no such file")
    try:
      arch = json.loads(paths.path(name_or_path).read_text())
    except json.JSONDecodeError as e:
      raise errors.ConfigError(f"--model={name_or_path} is not JSON: {e}") from None
    if not isinstance(arch, dict) or "vision_cfg" not in arch or "text_cfg" not in arch:
      raise errors.ConfigError(f"--model={name_or_path} is not an open_clip model config (it "
                               "needs embed_dim, vision_cfg and text_cfg)")
    return arch
  raise errors.ConfigError(f"--model={name_or_path!r} is not a known open_clip architecture; "
                           f"known: {', '.join(sorted(known))}; or pass the path of an "
                           "open_clip model-config .json")


def _unsupported(arch: dict) -> list[str]:
  """The fields of `arch` that ask for something this converter does not map."""
  vision, text = arch["vision_cfg"], arch["text_cfg"]
  out = []
  if arch.get("custom_text") or "multimodal_cfg" in arch or vision.get("attentional_pool"):
    out.append("CoCa (attentional pooler, multimodal decoder)")
  checks = [
      (vision, "timm_model_name", None), (vision, "ls_init_value", None),
      (vision, "pos_embed_type", "learnable"), (vision, "pool_type", "tok"),
      (vision, "final_ln_after_pool", False), (text, "hf_model_name", None),
      (text, "ls_init_value", None), (text, "embed_cls", False), (text, "pool_type", "argmax"),
      (text, "proj_type", "linear"), (text, "proj_bias", False), (text, "no_causal_mask", False),
      (text, "final_ln_after_pool", False), (text, "text_arch", "clip")]
  for cfg, field, default in checks:
    if cfg.get(field, default) != default:
      out.append(f"{'vision' if cfg is vision else 'text'}_cfg.{field}={cfg[field]!r}")
  for cfg in (vision, text):
    for field in ("block_type", "qk_norm", "scaled_cosine_attn", "scale_heads",
                  "scale_attn_inner", "scale_attn", "scale_fc", "act_kwargs", "norm_kwargs"):
      if cfg.get(field):
        out.append(f"{'vision' if cfg is vision else 'text'}_cfg.{field}={cfg[field]!r}")
  if isinstance(vision.get("image_size"), (list, tuple)) and len(set(vision["image_size"])) > 1:
    out.append(f"vision_cfg.image_size={vision['image_size']} (not square)")
  if isinstance(vision.get("layers", 12), (list, tuple)):
    out.append("vision_cfg.layers as a list (a ResNet tower)")
  return out


def _size(width: int, depth: int, heads: int, mlp_ratio: float) -> str:
  return layers.size_name(layers.TransformerSize(width=width, depth=depth,
                                                 mlp_dim=int(width * mlp_ratio), num_heads=heads))


def model_config(arch: dict) -> ml_collections.ConfigDict:
  """Our `config.model` for the open_clip architecture `arch`; ConfigError for what it cannot
  express, naming the fields."""
  unsupported = _unsupported(arch)
  if unsupported:
    raise errors.ConfigError("this open_clip architecture is not supported by the converter: "
                             + "; ".join(unsupported))
  vision, text = arch["vision_cfg"], arch["text_cfg"]
  preprocess = arch.get("preprocess_cfg") or {}
  image_size = vision.get("image_size", 224)
  image_size = image_size[0] if isinstance(image_size, (list, tuple)) else int(image_size)
  width = vision.get("width", 768)
  vision_size = _size(width, vision.get("layers", 12), width // vision.get("head_width", 64),
                      vision.get("mlp_ratio", 4.0))
  text_size = _size(text.get("width", 512), text.get("layers", 12), text.get("heads", 8),
                    text.get("mlp_ratio", 4.0))
  return ml_collections.ConfigDict(dict(
      name="two_towers", encoder=f"{vision_size}/{vision.get('patch_size', 16)}",
      text_encoder=text_size, text_depth=None, embed_dim=int(arch["embed_dim"]),
      vocab_size=int(text.get("vocab_size", 49408)), image_size=image_size,
      max_text_len=int(text.get("context_length", 77)), dtype="float32",
      temperature_init=1 / 0.07, bias_init=arch.get("init_logit_bias"),
      class_token=True, ln_pre=not vision.get("no_ln_pre", False), patch_bias=False,
      image_pooling="cls", text_pooling="argmax",
      activation="quick_gelu" if arch.get("quick_gelu") else "gelu",
      ln_eps=TORCH_LN_EPS, image_mean=list(preprocess.get("mean", CLIP_MEAN)),
      image_std=list(preprocess.get("std", CLIP_STD))))


# ---------------------------------------------------------------------------- Param mapping ---
Rule = tuple[str, Callable[[np.ndarray], np.ndarray]]  # (their name, their array -> ours)


def _same(a):
  return a


def _transposed(a):
  return a.T


def _qkv(part: int) -> Callable[[np.ndarray], np.ndarray]:
  """Slice `part` (0 q, 1 k, 2 v) of a fused in-projection, as our kernel (or bias)."""
  def take(a):
    piece = np.split(a, 3, axis=0)[part]
    return piece.T if piece.ndim == 2 else piece
  return take


def _patch_kernel(a):
  """conv1.weight [D, C, P, P] -> our patch kernel [(P P C), D] (rows of a patch, then columns,
  then channels: `vit.VisionEncoder`'s patch layout)."""
  return a.transpose(2, 3, 1, 0).reshape(-1, a.shape[0])


def _ln(theirs: str) -> dict[str, Rule]:
  return {"scale": (f"{theirs}.weight", _same), "bias": (f"{theirs}.bias", _same)}


def _block(theirs: str) -> dict[str, Rule]:
  rules = {f"ln_self/{k}": v for k, v in _ln(f"{theirs}.ln_1").items()}
  rules |= {f"ln_mlp/{k}": v for k, v in _ln(f"{theirs}.ln_2").items()}
  for i, name in enumerate(("query", "key", "value")):
    rules[f"self_attn/{name}/kernel"] = (f"{theirs}.attn.in_proj_weight", _qkv(i))
    rules[f"self_attn/{name}/bias"] = (f"{theirs}.attn.in_proj_bias", _qkv(i))
  rules["self_attn/out/kernel"] = (f"{theirs}.attn.out_proj.weight", _transposed)
  rules["self_attn/out/bias"] = (f"{theirs}.attn.out_proj.bias", _same)
  for ours, them in (("fc1", "c_fc"), ("fc2", "c_proj")):
    rules[f"mlp/{ours}/kernel"] = (f"{theirs}.mlp.{them}.weight", _transposed)
    rules[f"mlp/{ours}/bias"] = (f"{theirs}.mlp.{them}.bias", _same)
  return rules


def _nest(prefix: str, rules: dict[str, Rule]) -> dict[str, Rule]:
  return {f"{prefix}/{k}": v for k, v in rules.items()}


def rules(arch: dict) -> dict[str, Rule]:
  """{our param path 'a/b/c': (open_clip state-dict name, transform)} for a CLIP."""
  vision, text = arch["vision_cfg"], arch["text_cfg"]
  out = {"image_tower/patch_embed/kernel": ("visual.conv1.weight", _patch_kernel),
         "image_tower/class_token": ("visual.class_embedding", _same),
         "image_tower/pos_embedding": ("visual.positional_embedding", _same),
         "image_projection/kernel": ("visual.proj", _same),
         "text_tower/token_embedding": ("token_embedding.weight", _same),
         "text_tower/pos_embedding": ("positional_embedding", _same),
         "text_projection/kernel": ("text_projection", _same),
         "log_temperature": ("logit_scale", lambda a: a.reshape(()))}
  if "init_logit_bias" in arch and arch["init_logit_bias"] is not None:
    out["bias"] = ("logit_bias", lambda a: a.reshape(()))
  if not vision.get("no_ln_pre", False):
    out |= _nest("image_tower/ln_pre", _ln("visual.ln_pre"))
  out |= _nest("image_tower/ln_final", _ln("visual.ln_post"))
  out |= _nest("text_tower/ln_final", _ln("ln_final"))
  for i in range(vision.get("layers", 12)):
    out |= _nest(f"image_tower/block{i}", _block(f"visual.transformer.resblocks.{i}"))
  for i in range(text.get("layers", 12)):
    out |= _nest(f"text_tower/block{i}", _block(f"transformer.resblocks.{i}"))
  return out


def _listed(names, limit: int = 8) -> str:
  names = sorted(names)
  more = f" and {len(names) - limit} more" if len(names) > limit else ""
  return ", ".join(names[:limit]) + more


def convert_params(state: dict[str, np.ndarray], arch: dict,
                   shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
  """Our params {path: float32 array} from an open_clip state dict. `shapes`: our params' shapes
  by path (the model `model_config(arch)` builds). WeightsError naming the missing, unexpected and
  mis-shaped arrays if the weights do not fit the architecture."""
  table = rules(arch)
  assert set(table) == set(shapes), (set(table) ^ set(shapes))  # The mapping covers the model.
  wanted = {them for them, _ in table.values()}
  missing = wanted - set(state)
  unexpected = {k for k in state if k not in wanted and k.rsplit(".", 1)[-1] not in _IGNORED}
  params, misshaped = {}, []
  for ours, (them, transform) in table.items():
    if them in missing:
      continue
    value = np.asarray(transform(np.asarray(state[them], np.float32)))
    if value.shape != tuple(shapes[ours]):
      misshaped.append(f"{them} {tuple(state[them].shape)} (gives {value.shape} for {ours}, "
                       f"expected {tuple(shapes[ours])})")
    params[ours] = value
  problems = []
  if missing:
    problems.append(f"missing {_listed(missing)}")
  if unexpected:
    problems.append(f"unexpected {_listed(unexpected)}")
  if misshaped:
    problems.append(f"mis-shaped {_listed(misshaped, 4)}")
  if problems:
    raise safetensors_io.WeightsError(
        "the weights do not fit this architecture (" + "; ".join(problems) + "): pass the --model "
        "they were trained as")
  if not all(np.isfinite(v).all() for v in params.values()):
    raise safetensors_io.WeightsError("the weights hold NaN or infinite values: the file is "
                                      "corrupt; download it again")
  return params
