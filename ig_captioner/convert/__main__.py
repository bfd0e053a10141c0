"""Converts a checkpoint of another codebase into a run of this one.

    python -m ig_captioner.convert --source=open_clip --model=ViT-B-32 \\
        --weights=open_clip_model.safetensors --workdir=/tmp/clip_b32
    python -m ig_captioner.evaluate --workdir=/tmp/clip_b32 --once

`--model`: an open_clip architecture name (ViT-B-32, ViT-B-16, ViT-L-14 and their -quickgelu
variants) or the path of an open_clip model-config JSON. `--config` (default
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
from ig_captioner import experiment
from ig_captioner import models
from ig_captioner import paths
from ig_captioner.convert import open_clip
from ig_captioner.convert import weights_files
from ig_captioner.convert import workdir as workdir_lib
from ig_captioner.data import tokenizer as tokenizer_lib

SOURCES = ("open_clip",)
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
            base_config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Converts and writes the run; returns its config. UserErrors name what to fix, and leave
  `workdir` as it was."""
  workdir_lib.check_target(workdir)
  arch = open_clip.load_architecture(model)
  config = ml_collections.ConfigDict(base_config.to_dict())
  config.model = open_clip.model_config(arch)
  config.data.tokenizer = tokenizer_lib.CLIP_BPE
  experiment.check_tokenizer_fits(tokenizer_lib.from_setting(config.data.tokenizer), config.model)
  state = weights_files.read(weights)
  params = open_clip.convert_params(state, arch, param_shapes(config.model))
  config.converted_from = ml_collections.ConfigDict(dict(
      source=source, model=model, weights=paths.resolve(weights), weights_sha256=_sha256(weights),
      num_params=int(sum(v.size for v in params.values()))))
  workdir_lib.write(workdir, config, params)
  logging.info("converted %s (%s, %d params) into %s", weights, model,
               config.converted_from.num_params, workdir)
  return config


def main():
  """Command-line entry point (flags are defined here so that importing defines none)."""
  source = flags.DEFINE_enum("source", None, SOURCES, "The codebase the checkpoint comes from.")
  model = flags.DEFINE_string("model", None, "Architecture name, or a model-config JSON path.")
  weights = flags.DEFINE_string("weights", None, "The weights file (.safetensors; .bin/.pt "
                                "with torch installed).")
  workdir = flags.DEFINE_string("workdir", None, "A new directory for the converted run.")
  config = config_flags.DEFINE_config_file("config", os.path.normpath(_DEFAULT_CONFIG),
                                           "What the run is evaluated on.")
  flags.mark_flags_as_required(["source", "model", "weights", "workdir"])

  def run(argv):
    del argv
    converted = convert(source.value, model.value, weights.value,
                        paths.resolve(workdir.value), config.value)
    print(f"Wrote {workdir.value}: {converted.converted_from.num_params:,} params of "
          f"{model.value}. Evaluate it with: python -m ig_captioner.evaluate "
          f"--workdir={workdir.value} --once")
  cli.run(run)


if __name__ == "__main__":
  main()
