"""Small shared pieces for tests: tiny models of each family and random (non-degenerate) params."""

import dataclasses
import os
import shlex
import subprocess
import sys

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from ig_captioner import metric_files
from ig_captioner import models
from ig_captioner import token_ids


def tiny_model_config(**overrides) -> ml_collections.ConfigDict:
  """A nano captioner's `config.model`."""
  cfg = ml_collections.ConfigDict(dict(
      name="captioner", encoder="nano/8", decoder="nano", decoder_depth=None, vocab_size=32,
      image_size=16, max_text_len=8, dtype="float32"))
  cfg.update(overrides)
  return cfg


def tiny_family_config(family: str) -> ml_collections.ConfigDict:
  """The nano `config.model` of a caption family: 'captioner' (also CapPa's) or 'coca'."""
  if family != "coca":
    return tiny_model_config()
  config = tiny_model_config(name="coca", unimodal_depth=1, multimodal_depth=1, embed_dim=16,
                             temperature_init=1 / 0.07)
  del config["decoder_depth"]
  return config


def tiny_two_towers_config(**overrides) -> ml_collections.ConfigDict:
  """A nano two-tower (SigLIP-initialised) `config.model`."""
  cfg = ml_collections.ConfigDict(dict(
      name="two_towers", encoder="nano/8", text_encoder="nano", text_depth=None, embed_dim=16,
      vocab_size=32, image_size=16, max_text_len=8, dtype="float32", temperature_init=10.0,
      bias_init=-10.0))
  cfg.update(overrides)
  return cfg


def jitted(model: models.Model) -> models.Model:
  """`model` with every predict function jitted. Tests compute references by calling them
  directly; un-jitted, every primitive of a call compiles on its own (thousands of tiny
  programs, most of the unit tier's compile time). Library code jits around them all the
  same: a jitted function inside a traced one is inlined."""
  return dataclasses.replace(model, predict_fns={name: jax.jit(fn)
                                                 for name, fn in model.predict_fns.items()})


def random_params(model, seed: int = 0, scale: float = 0.3):
  """Params with every leaf random, so no zero-initialized layer hides a bug. `model` is a
  `models.Model` or a captioner module."""
  init_params = model.init_params if isinstance(model, models.Model) else (
      lambda rng: models.get("captioner").init_params(model, rng))
  # Shapes only (nothing is computed or compiled): every value is drawn below.
  params = nn.meta.unbox(jax.eval_shape(init_params, jax.random.key(seed)))
  leaves, treedef = jax.tree.flatten(params)
  rng = np.random.default_rng(seed)
  return jax.tree.unflatten(
      treedef, [rng.normal(0, scale, x.shape).astype(np.float32) for x in leaves])


def random_tokens(rng: np.random.Generator, batch: int, length: int, vocab: int) -> np.ndarray:
  """[BOS, random piece ids..., EOS, PAD...] with random lengths (no special id inside)."""
  tokens = np.zeros((batch, length), np.int32)
  for i in range(batch):
    n = rng.integers(1, length - 1)
    tokens[i, 0] = token_ids.BOS_ID
    tokens[i, 1:n + 1] = rng.integers(token_ids.NUM_SPECIAL_IDS, vocab, size=n)
    tokens[i, n + 1] = token_ids.EOS_ID
  return tokens


def corrupt_middle_third(path) -> None:
  """Overwrites the middle third of a file with 0xff bytes (bit rot that keeps its size)."""
  with open(path, "r+b") as f:
    size = f.seek(0, 2)
    f.seek(size // 3)
    f.write(b"\xff" * (size // 3))


def shell_programs(shell_line: str) -> list[list[str]]:
  """The `python -m ...` argvs of a shell line of commands joined by &&."""
  words = shlex.split(shell_line)
  programs, current = [], None
  for word in words + ["&&"]:
    if word == "&&":
      if current:
        programs.append(current)
      current = None
    elif word in ("python", "python3") and current is None:
      current = []
    elif current is not None and word != "-m":
      current.append(word)
  return programs


REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_module(*args: str) -> subprocess.CompletedProcess:
  """`python -m ARGS...` from the repository root, its output captured."""
  return subprocess.run([sys.executable, "-m", *args], cwd=REPOSITORY, capture_output=True,
                        text=True, check=False)


def evaluated_once(workdir) -> dict:
  """The one eval row of `python -m ig_captioner.evaluate --workdir=WORKDIR --once` on a run of
  `configs/converted.py`, checked to hold the embeddings' zero-shot top-1 and recalls."""
  evaluated = run_module("ig_captioner.evaluate", f"--workdir={workdir}", "--once")
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  (row,) = metric_files.read_jsonl(metric_files.jsonl_path(str(workdir), "eval"))
  assert row["step"] == 0 and 0 <= row["zeroshot/digits/acc1"] <= 1
  assert {f"retrieval/digits_retrieval/{d}_r{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)} \
      < set(row)
  return row
