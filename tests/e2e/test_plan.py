"""The memory and compile planner (`python -m ig_captioner.tools.plan`): the demo config compiled
for a v5e:2x2 TPU topology on this CPU machine, its per-chip figures against an independent count,
and a config that does not fit ending with the knobs to turn. The compiling tests need libtpu
(`pip install -e '.[planner]'`, which `.ci/run` installs) and skip without it."""

import importlib.util
import json
import os
import re
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest

from ig_captioner import models
from ig_captioner import optimizer as optimizer_lib
from ig_captioner.tools import plan
from tests.conftest import REPO, load_config_module

needs_libtpu = pytest.mark.skipif(
    importlib.util.find_spec("libtpu") is None,
    reason="libtpu is not installed, so nothing can be compiled for a TPU topology: "
           "pip install -e '.[planner]' (.ci/run does)")


def _plan(*args, timeout=300):
  """Runs the planner in its own process (this one has 8 fake CPU devices set up)."""
  return subprocess.run([sys.executable, "-m", "ig_captioner.tools.plan", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=timeout,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})


def _bytes(tree) -> int:
  return sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


@needs_libtpu
def test_demo_config_plans_on_a_v5e_topology(tmp_path):
  out = _plan("--config=configs/demo.py:runlocal", "--topology=v5e:2x2", "--mfu=0.5",
              f"--json={tmp_path / 'plan.json'}")
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads((tmp_path / "plan.json").read_text())
  train = result["train"]
  assert result["chips"] == 4 and result["mesh"] == {"data": 4, "fsdp": 1, "tensor": 1}

  # Independent count: the demo's mesh is pure data parallelism, so every chip holds all params
  # and the whole optimizer state, and a quarter of the batch.
  config = load_config_module("demo").get_config("runlocal")
  model = models.build(config.model)
  params = nn.meta.unbox(jax.eval_shape(model.init_params, jax.random.key(0)))
  tx = optimizer_lib.build(config.optimizer, config.total_steps)
  assert train["params"] == _bytes(params)
  assert train["optimizer_state"] == _bytes(jax.eval_shape(tx.init, params))
  b, t, s = config.batch_size // 4, config.model.max_text_len, config.model.image_size
  assert train["batch"] == b * s * s * 3 * 4 + b * t * 4 + b * (t - 1)
  assert train["temporaries"] > 0 and train["flops"] > 0
  assert train["total"] == (train["arguments"] + train["outputs"] - train["aliased"] +
                            train["temporaries"] + train["code"])
  assert train["step_seconds"] == pytest.approx(train["model_flops"] / (197e12 * 0.5))
  assert result["eval"]["evaluator"] == "digits" and result["eval"]["total"] > 0

  # The printed table shows the same figures.
  rows = dict(re.findall(r"^  (params|optimizer state|total)\s+([\d.]+) MiB", out.stdout, re.M))
  assert float(rows["params"]) == pytest.approx(train["params"] / 2**20, abs=0.006)
  assert float(rows["optimizer state"]) == pytest.approx(train["optimizer_state"] / 2**20,
                                                         abs=0.006)
  assert float(rows["total"]) == pytest.approx(train["total"] / 2**20, abs=0.006)
  assert "16.00 GiB HBM and 197 TFLOP/s" in out.stdout
  assert "train step time at 50% MFU" in out.stdout


@needs_libtpu
def test_a_config_that_does_not_fit_exits_1_naming_the_knobs():
  out = _plan("--config=configs/demo.py:runlocal", "--topology=v5e:2x2", "--eval=false",
              "--config.batch_size=1048576")
  assert out.returncode == 1, out.stdout + out.stderr[-3000:]
  assert "per chip" in out.stdout  # The table comes first.
  message = out.stderr.strip().splitlines()[-1]
  assert message.startswith("error: the train step needs ")
  for knob in ("config.batch_size (now 1048576)", "config.model.remat",
               "config.objective.logits_chunk", "config.mesh.fsdp (now 1)"):
    assert knob in message


def test_fit_check_and_topology_errors_without_compiling():
  result = {"train": {"total": 20 * plan.GIB, "temporaries": 18 * plan.GIB},
            "hbm_bytes": 16 * plan.GIB, "chip": "TPU v5e", "mesh": {"fsdp": 4},
            "batch_size": 512, "remat": "none", "logits_chunk": 0}
  with pytest.raises(plan.PlanError, match=r"needs 20.00 GiB per chip .* has 16.00 GiB"):
    plan.check_fits(result)
  result["train"]["total"] = 15 * plan.GIB
  plan.check_fits(result)
  with pytest.raises(plan.PlanError, match=r"--topology='h100:8' is not KIND:SHAPE"):
    plan.target_devices("h100:8")
