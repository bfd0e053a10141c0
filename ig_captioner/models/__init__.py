"""Model families, chosen by `config.model.name`. Each is a module of this package defining

    build(model_config) -> flax Module       checks its own config fields (ConfigError)
    init_params(model, rng) -> boxed params  from dummy inputs of the model's shapes
    predict_fns(model) -> {name: fn}         pure functions of params

Objectives, evaluators and the scoring algorithms (`ig_captioner.scoring`) use only the
predict functions, by the names below, and never reach into a module: a family that supplies a
group supports everything that needs it. Shared pieces of the families: `base.py`.
"""

import dataclasses
import functools
from types import ModuleType
from typing import Any, Callable

import ml_collections

from ig_captioner import errors
from ig_captioner import registry

# An image-conditioned text decoder (captioners), whose sequence log-likelihoods log P(t|I) and,
# without visual tokens, log P(t) `scoring.likelihood` computes:
#   encode_images(params, images_BxHxWxC) -> visual_BxNxD
#   decode(params, tokens_BxL, visual_BxNxD or None) -> logits_BxLxV   (None: text only)
CAPTION_FNS = ("encode_images", "decode")
# The same decoder, cached (see `decoder.TextDecoder.extend`; used by `prompt_scoring` and
# `generation`): cross_kv(params, visual_BxNxD) -> per-block (k, v) of the visual tokens;
#   extend(params, tokens_BxCxQ, positions_Q, contexts or None, cross_kvs or None)
#     -> (logits_BxCxQxV, per-block (k, v) of the new tokens)
CACHE_FNS = ("cross_kv", "extend")
# L2-normalised embeddings in a joint space (two towers), and the contrastive logit parameters:
#   embed_images(params, images_BxHxWxC) -> z_BxE;  embed_texts(params, tokens_BxT) -> z_BxE
#   logit_scale_and_bias(params) -> (scale, bias or None)
EMBED_FNS = ("embed_images", "embed_texts", "logit_scale_and_bias")
# A decoder that can also predict every token at once (CapPa):
#   decode_parallel(params, tokens_BxL, visual_BxNxD, parallel_B) -> logits_BxLxV, with no causal
#   mask for the examples where parallel_B is True.
PARALLEL_FNS = ("decode_parallel",)
# One pass giving both (CoCa's training forward):
#   caption_and_embed(params, images, tokens_BxT) -> (logits_Bx(T-1)xV over tokens[:, :-1] with
#   the image, z_img_BxE, z_txt_BxE)
JOINT_FNS = ("caption_and_embed",)
# The decoder in two steps, so that its logits can be computed a chunk of positions at a time
# (`config.objective.logits_chunk`, `scoring.likelihood.chunked_token_logprobs`):
#   decode_features(params, tokens_BxL, visual_BxNxD or None, parallel_B or None) -> h_BxLxD
#   decode_logits(params, h_BxXxD) -> logits_BxXxV (any number X of positions)
CHUNKED_FNS = ("decode_features", "decode_logits")


def get(name: str) -> ModuleType:
  """The family module named `name`; ConfigError listing the known ones otherwise."""
  return registry.resolve(__name__, "build", name, "config.model.name")


@dataclasses.dataclass(frozen=True)
class Model:
  """A built model: its family's name, the flax module, and what the trainer and evaluator use."""
  name: str
  module: Any
  init_params: Callable  # rng -> boxed params
  predict_fns: dict


def build(model_config: ml_collections.ConfigDict) -> Model:
  """The model of `config.model` (its family checks the fields)."""
  family = get(model_config.name)
  module = family.build(model_config)
  return Model(model_config.name, module, functools.partial(family.init_params, module),
               family.predict_fns(module))


def supplies(predict_fns: dict, group: tuple[str, ...]) -> bool:
  return all(name in predict_fns for name in group)


def require(predict_fns: dict, group: tuple[str, ...], user: str, model_name: str) -> None:
  """ConfigError unless the model supplies every predict function of `group` that `user` needs."""
  if not supplies(predict_fns, group):
    raise errors.ConfigError(
        f"{user} needs a model supplying {', '.join(group)}; config.model.name={model_name!r} "
        f"supplies {', '.join(sorted(predict_fns))}")
