"""open_clip's state-dict names as rules onto our param paths: the pieces every open_clip tower
shares (layer norms, residual blocks with fused q/k/v, the patch convolution).

A rule maps our param path 'a/b/c' to (their state-dict name, their array -> ours).
"""

from typing import Callable

import numpy as np

Rule = tuple[str, Callable[[np.ndarray], np.ndarray]]


def same(a):
  return a


def transposed(a):
  return a.T


def qkv(part: int) -> Callable[[np.ndarray], np.ndarray]:
  """Slice `part` (0 q, 1 k, 2 v) of a fused in-projection, as our kernel (or bias)."""
  def take(a):
    piece = np.split(a, 3, axis=0)[part]
    return piece.T if piece.ndim == 2 else piece
  return take


def patch_kernel(a):
  """conv1.weight [D, C, P, P] -> our patch kernel [(P P C), D] (rows of a patch, then columns,
  then channels: `vit.VisionEncoder`'s patch layout)."""
  return a.transpose(2, 3, 1, 0).reshape(-1, a.shape[0])


def ln(theirs: str) -> dict[str, Rule]:
  return {"scale": (f"{theirs}.weight", same), "bias": (f"{theirs}.bias", same)}


def nest(prefix: str, rules: dict[str, Rule]) -> dict[str, Rule]:
  return {f"{prefix}/{k}": v for k, v in rules.items()}


def attention(ours: str, theirs: str, fused: bool = True) -> dict[str, Rule]:
  """An attention's q/k/v/out: from a fused `in_proj_weight`, or (`fused` False, keys of
  another width) from `q_proj_weight`, `k_proj_weight` and `v_proj_weight`."""
  rules = {}
  for i, name in enumerate(("query", "key", "value")):
    rules[f"{ours}/{name}/kernel"] = ((f"{theirs}.in_proj_weight", qkv(i)) if fused
                                      else (f"{theirs}.{name[0]}_proj_weight", transposed))
    rules[f"{ours}/{name}/bias"] = (f"{theirs}.in_proj_bias", qkv(i))
  rules[f"{ours}/out/kernel"] = (f"{theirs}.out_proj.weight", transposed)
  rules[f"{ours}/out/bias"] = (f"{theirs}.out_proj.bias", same)
  return rules


def mlp(ours: str, theirs: str) -> dict[str, Rule]:
  rules = {}
  for our_name, their_name in (("fc1", "c_fc"), ("fc2", "c_proj")):
    rules[f"{ours}/{our_name}/kernel"] = (f"{theirs}.{their_name}.weight", transposed)
    rules[f"{ours}/{our_name}/bias"] = (f"{theirs}.{their_name}.bias", same)
  return rules


def block(theirs: str) -> dict[str, Rule]:
  """A residual self-attention block (`ResidualAttentionBlock`) as `layers.TransformerBlock`."""
  rules = nest("ln_self", ln(f"{theirs}.ln_1")) | nest("ln_mlp", ln(f"{theirs}.ln_2"))
  return rules | attention("self_attn", f"{theirs}.attn") | mlp("mlp", f"{theirs}.mlp")


def cross_block(theirs: str) -> dict[str, Rule]:
  """A cross-attention block (`ResidualAttentionBlock(is_cross_attention=True)`) as
  `cross_block.CrossAttentionBlock`."""
  rules = nest("ln_query", ln(f"{theirs}.ln_1")) | nest("ln_visual", ln(f"{theirs}.ln_1_kv"))
  rules |= nest("ln_mlp", ln(f"{theirs}.ln_2"))
  return rules | attention("cross_attn", f"{theirs}.attn") | mlp("mlp", f"{theirs}.mlp")


def vision_trunk(ours: str, vision: dict, theirs: str = "visual") -> dict[str, Rule]:
  """A `VisionTransformer`'s patches, class token, positions, ln_pre and blocks."""
  rules = {f"{ours}/patch_embed/kernel": (f"{theirs}.conv1.weight", patch_kernel),
           f"{ours}/class_token": (f"{theirs}.class_embedding", same),
           f"{ours}/pos_embedding": (f"{theirs}.positional_embedding", same)}
  if not vision.get("no_ln_pre", False):
    rules |= nest(f"{ours}/ln_pre", ln(f"{theirs}.ln_pre"))
  for i in range(vision.get("layers", 12)):
    rules |= nest(f"{ours}/block{i}", block(f"{theirs}.transformer.resblocks.{i}"))
  return rules
