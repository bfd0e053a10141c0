"""Converts a checkpoint of another codebase into a run of this one.

    python -m ig_captioner.convert --source=open_clip --model=ViT-B-32 \\
        --weights=open_clip_model.safetensors --workdir=/tmp/clip_b32
    python -m ig_captioner.convert --source=big_vision --model=siglip_b16_224 \\
        --weights=webli_en_b16_224_63724782.npz --tokenizer=cc_en.32000.model \\
        --workdir=/tmp/siglip_b16
    python -m ig_captioner.evaluate --workdir=/tmp/clip_b32 --once

`--model`: an open_clip architecture name (ViT-B-32, ViT-B-16, ViT-L-14 and their -quickgelu
variants) or the path of an open_clip model-config JSON; for big_vision, a SigLIP preset
(`convert/big_vision_presets.json`) or the path of a JSON file with big_vision's config.model.
`--tokenizer` (big_vision two towers): the SentencePiece model the checkpoint was trained with
(c4_en for the English SigLIP models), copied into the run. `--config` (default
configs/converted.py) gives what the run is evaluated on; its model is replaced by the converted
one, its tokenizer by the checkpoint's.
"""

import hashlib
import os

from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags

from ig_captioner import cli
from ig_captioner import errors
from ig_captioner import experiment
from ig_captioner import models
from ig_captioner import paths
from ig_captioner.convert import big_vision
from ig_captioner.convert import open_clip
from ig_captioner.convert import weights_files
from ig_captioner.convert import workdir as workdir_lib
from ig_captioner.data import sticky_eos
from ig_captioner.data import tokenizer as tokenizer_lib

SOURCES = ("open_clip", "big_vision")
# The SentencePiece model of a run converted from big_vision, in its workdir.
TOKENIZER_FILE = "sentencepiece.model"
_DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "converted.py")


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with paths.path(path).open("rb") as f:
    for chunk in iter(lambda: f.read(1 << 24), b""):
      digest.update(chunk)
  return digest.hexdigest()


def param_shapes(model_config: ml_collections.ConfigDict) -> dict[str, tuple[int, ...]]:
  """{'a/b/c': shape} of the params of the model `model_config` builds (nothing allocated)."""
  import flax  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  import jax  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  model = models.build(model_config)
  abstract = flax.linen.meta.unbox(jax.eval_shape(model.init_params, jax.random.key(0)))
  return {k: v.shape for k, v in flax.traverse_util.flatten_dict(abstract, sep="/").items()}


def convert(source: str, model: str, weights: str, workdir: str,
            base_config: ml_collections.ConfigDict,
            tokenizer: str | None = None) -> ml_collections.ConfigDict:
  """Converts and writes the run; returns its config. UserErrors name what to fix, and leave
  `workdir` as it was."""
  workdir_lib.check_target(workdir)
  config = ml_collections.ConfigDict(base_config.to_dict())
  files = {}
  if source == "big_vision":
    params, files = _big_vision(model, weights, workdir, config, tokenizer)
  else:
    if tokenizer:
      raise errors.ConfigError("--tokenizer is for --source=big_vision; open_clip's models use "
                               "CLIP's tokenizer, which comes with ig_captioner")
    arch = open_clip.load_architecture(model)
    config.model = open_clip.model_config(arch)
    config.data.tokenizer = tokenizer_lib.CLIP_BPE
    experiment.check_tokenizer_fits(tokenizer_lib.from_setting(config.data.tokenizer),
                                    config.model)
    state = weights_files.read(weights)
    params = open_clip.convert_params(state, arch, param_shapes(config.model))
  config.converted_from = ml_collections.ConfigDict(dict(
      source=source, model=model, weights=paths.resolve(weights), weights_sha256=_sha256(weights),
      num_params=int(sum(v.size for v in params.values()))))
  workdir_lib.write(workdir, config, params, files)
  logging.info("converted %s (%s, %d params) into %s", weights, model,
               config.converted_from.num_params, workdir)
  return config


def _big_vision(model: str, weights: str, workdir: str, config: ml_collections.ConfigDict,
                tokenizer: str | None) -> tuple[dict, dict]:
  """Sets `config.model` (and for two towers `config.data.tokenizer`, `config.evals` for the
  image half alone: none); returns (params, files for the workdir)."""
  arch_dict = big_vision.load_architecture(model)
  # Read first: a bad tokenizer is named before gigabytes of weights are.
  text_tokenizer = sticky_eos.StickyEosTokenizer.from_file(tokenizer) if tokenizer else None
  state = big_vision.checkpoint_params(weights_files.read(weights))
  arch = big_vision.architecture(arch_dict, state)
  if arch.text is not None and text_tokenizer is None:
    raise errors.ConfigError("--tokenizer is required for a two-tower checkpoint: the "
                             "SentencePiece model it was trained with (the English SigLIP "
                             "models': gs://t5-data/vocabs/cc_en.32000/sentencepiece.model)")
  image_size, text_len = big_vision.input_sizes(arch, state, arch_dict.get("_image_size"))
  config.model = big_vision.model_config(arch, image_size, text_len, config.model)
  files = {}
  if arch.text is None:
    config.evals = ml_collections.ConfigDict()  # Image features alone: nothing to evaluate.
  else:
    experiment.check_tokenizer_fits(text_tokenizer, config.model)
    files[TOKENIZER_FILE] = paths.path(tokenizer).read_bytes()
    config.data.tokenizer = f"{tokenizer_lib.STICKY_EOS}:{paths.join(workdir, TOKENIZER_FILE)}"
  params = big_vision.convert_params(state, arch, image_size, text_len,
                                     param_shapes(config.model))
  return params, files


def _summary(config: ml_collections.ConfigDict, model: str, workdir: str) -> str:
  """What was written, and what to do with it."""
  done = f"Wrote {workdir}: {config.converted_from.num_params:,} params of {model}."
  if config.model.get("text_encoder") is not None:
    return f"{done} Evaluate it with: python -m ig_captioner.evaluate --workdir={workdir} --once"
  options = ", class_token=True" if config.model.class_token else ""
  return (f"{done} An image tower alone (nothing to evaluate): start a captioner's encoder from "
          f"it with config.model.encoder={config.model.encoder!r}, image_size="
          f"{config.model.image_size}{options} and config.init_from=dict(workdir={workdir!r}, "
          "rename={'encoder': 'image_tower'})")


def main():
  """Command-line entry point (flags are defined here so that importing defines none)."""
  source = flags.DEFINE_enum("source", None, SOURCES, "The codebase the checkpoint comes from.")
  model = flags.DEFINE_string("model", None, "Architecture name, or a model-config JSON path.")
  weights = flags.DEFINE_string("weights", None, "The weights file (.safetensors; .bin/.pt "
                                "with torch installed; .npz for big_vision).")
  tokenizer = flags.DEFINE_string("tokenizer", None, "big_vision two towers: the SentencePiece "
                                  ".model file the checkpoint was trained with.")
  workdir = flags.DEFINE_string("workdir", None, "A new directory for the converted run.")
  config = config_flags.DEFINE_config_file("config", os.path.normpath(_DEFAULT_CONFIG),
                                           "What the run is evaluated on.")
  flags.mark_flags_as_required(["source", "model", "weights", "workdir"])

  def run(argv):
    del argv
    converted = convert(source.value, model.value, weights.value,
                        paths.resolve(workdir.value), config.value, tokenizer.value)
    print(_summary(converted, model.value, workdir.value))
  cli.run(run)


if __name__ == "__main__":
  main()
