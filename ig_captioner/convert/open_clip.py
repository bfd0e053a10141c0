"""open_clip checkpoints: an architecture (a preset name or an open_clip model-config JSON) as
our `config.model`, and an open_clip state dict as our params.

Supported: CLIP-style two towers (`open_clip.CLIP` without `custom_text`): a ViT with class
token, `ln_pre`, `ln_post` and a projection; a causal text transformer pooled at its end token
(the highest id: open_clip's `argmax` pooling); exact GELU or QuickGELU; torch's layer-norm
epsilon 1e-5. And open_clip's CoCa (`open_clip_coca`). Presets: `open_clip_presets.json`
(copied from open_clip's model configs, its provenance inside).
"""

import ml_collections
import numpy as np

from ig_captioner import errors
from ig_captioner.convert import model_files
from ig_captioner.convert import open_clip_coca
from ig_captioner.convert import open_clip_names as names
from ig_captioner.convert import safetensors_io

TORCH_LN_EPS = 1e-5
# open_clip's defaults for its CLIP models (OPENAI_DATASET_MEAN / _STD in its constants.py),
# unless a model config names others (its `preprocess_cfg`'s `mean` and `std`).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# In open_clip's state dicts but not weights: the causal mask buffer of older versions.
_IGNORED = ("attn_mask",)


def presets() -> dict[str, dict]:
  return model_files.read_presets("open_clip_presets.json")


def load_architecture(name_or_path: str) -> dict:
  """An open_clip model config: a preset by name, or a model-config JSON file by path."""
  return model_files.load(
      name_or_path, presets(),
      lambda arch: isinstance(arch, dict) and "vision_cfg" in arch and "text_cfg" in arch,
      "open_clip architecture", "an open_clip model config",
      "it needs embed_dim, vision_cfg and text_cfg")


def is_coca(arch: dict) -> bool:
  """Whether `arch` is an open_clip CoCa (a multimodal decoder beside the two towers)."""
  return "multimodal_cfg" in arch


def _unsupported(arch: dict) -> list[str]:
  """The fields of `arch` that ask for something this converter does not map."""
  vision, text = arch["vision_cfg"], arch["text_cfg"]
  coca = is_coca(arch)
  out = open_clip_coca.unsupported(arch) if coca else []
  if not coca and (arch.get("custom_text") or vision.get("attentional_pool")):
    out.append("an attentional pooler or custom text tower without a multimodal_cfg (CoCa's)")
  checks = [
      (vision, "timm_model_name", None), (vision, "ls_init_value", None),
      (vision, "pos_embed_type", "learnable"), (vision, "pool_type", "tok"),
      (vision, "final_ln_after_pool", False), (text, "hf_model_name", None),
      (text, "ls_init_value", None), (text, "embed_cls", coca),
      (text, "proj_type", "linear"), (text, "proj_bias", False), (text, "no_causal_mask", False),
      (text, "final_ln_after_pool", False), (text, "text_arch", "clip")]
  if not coca:  # CoCa's text tower pools its appended class token, whatever pool_type says.
    checks.append((text, "pool_type", "argmax"))
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
  return open_clip_coca.size_name(width, depth, heads, mlp_ratio)


def _shared_fields(arch: dict) -> dict:
  """The `config.model` fields a CLIP and a CoCa of open_clip share: the ViT, the block style,
  the image statistics, the vocabulary and text length."""
  vision, text = arch["vision_cfg"], arch["text_cfg"]
  preprocess = arch.get("preprocess_cfg") or {}
  image_size = vision.get("image_size", 224)
  image_size = image_size[0] if isinstance(image_size, (list, tuple)) else int(image_size)
  width = vision.get("width", 768)
  vision_size = _size(width, vision.get("layers", 12), width // vision.get("head_width", 64),
                      vision.get("mlp_ratio", 4.0))
  return dict(
      encoder=f"{vision_size}/{vision.get('patch_size', 16)}", embed_dim=int(arch["embed_dim"]),
      vocab_size=int(text.get("vocab_size", 49408)), image_size=image_size,
      max_text_len=int(text.get("context_length", 77)), dtype="float32",
      temperature_init=1 / 0.07, class_token=True, ln_pre=not vision.get("no_ln_pre", False),
      patch_bias=False, activation="quick_gelu" if arch.get("quick_gelu") else "gelu",
      ln_eps=TORCH_LN_EPS, image_mean=list(preprocess.get("mean", CLIP_MEAN)),
      image_std=list(preprocess.get("std", CLIP_STD)))


def model_config(arch: dict) -> ml_collections.ConfigDict:
  """Our `config.model` for the open_clip architecture `arch`; ConfigError for what it cannot
  express, naming the fields."""
  unsupported = _unsupported(arch)
  if unsupported:
    raise errors.ConfigError("this open_clip architecture is not supported by the converter: "
                             + "; ".join(unsupported))
  shared = _shared_fields(arch)
  if is_coca(arch):
    return ml_collections.ConfigDict(shared | open_clip_coca.model_fields(arch))
  text = arch["text_cfg"]
  text_size = _size(text.get("width", 512), text.get("layers", 12), text.get("heads", 8),
                    text.get("mlp_ratio", 4.0))
  return ml_collections.ConfigDict(shared | dict(
      name="two_towers", text_encoder=text_size, text_depth=None,
      bias_init=arch.get("init_logit_bias"), image_pooling="cls", text_pooling="argmax"))


def rules(arch: dict) -> dict[str, names.Rule]:
  """{our param path 'a/b/c': (open_clip state-dict name, transform)} for a CLIP or a CoCa."""
  if is_coca(arch):
    return open_clip_coca.rules(arch)
  text = arch["text_cfg"]
  out = names.vision_trunk("image_tower", arch["vision_cfg"])
  out |= {"image_projection/kernel": ("visual.proj", names.same),
          "text_tower/token_embedding": ("token_embedding.weight", names.same),
          "text_tower/pos_embedding": ("positional_embedding", names.same),
          "text_projection/kernel": ("text_projection", names.same),
          "log_temperature": ("logit_scale", lambda a: a.reshape(()))}
  if "init_logit_bias" in arch and arch["init_logit_bias"] is not None:
    out["bias"] = ("logit_bias", lambda a: a.reshape(()))
  out |= names.nest("image_tower/ln_final", names.ln("visual.ln_post"))
  out |= names.nest("text_tower/ln_final", names.ln("ln_final"))
  for i in range(text.get("layers", 12)):
    out |= names.nest(f"text_tower/block{i}", names.block(f"transformer.resblocks.{i}"))
  return out


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
  model_files.check_fit(missing, unexpected, misshaped)
  if not all(np.isfinite(v).all() for v in params.values()):
    raise safetensors_io.WeightsError("the weights hold NaN or infinite values: the file is "
                                      "corrupt; download it again")
  return params
