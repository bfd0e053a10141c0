# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Planning a pod run: memory and step time per TPU chip, before you launch
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ig-captioner/ig-captioner/blob/main/notebooks/planning_a_pod_run.ipynb)
#
# Will the train step fit a chip's HBM, and how long will a step take? The memory planner
# (`python -m ig_captioner.tools.plan`) answers on this machine: it compiles the step ahead of time
# for a TPU topology with libtpu, and reads the compiler's memory and cost analyses. This
# notebook plans a config on a few topologies, and with the memory options.

# %%
# Set-up. On Colab: fetch the repository and install it with libtpu (a few minutes; restart
# the runtime if Colab asks, then run on). Elsewhere: the checkout holding this notebook,
# installed with `pip install -e '.[plots,planner]'`.
import logging
import os
import pathlib
import subprocess
import sys

REPOSITORY = "https://github.com/ig-captioner/ig-captioner"
COLAB_CHECKOUT = pathlib.Path("/content/ig-captioner")
if "google.colab" in sys.modules and not COLAB_CHECKOUT.exists():
  subprocess.run(["git", "clone", "--depth=1", REPOSITORY, str(COLAB_CHECKOUT)], check=True)
  subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-e",
                  f"{COLAB_CHECKOUT}[plots,planner]"], check=True)
  sys.path.insert(0, str(COLAB_CHECKOUT))
for ROOT in (pathlib.Path.cwd(), *pathlib.Path.cwd().parents, COLAB_CHECKOUT):
  if (ROOT / "configs" / "demo.py").exists():
    break
else:
  raise FileNotFoundError("run this notebook from a checkout of ig-captioner (configs/ is "
                          f"looked for from {pathlib.Path.cwd()} upwards)")
os.chdir(ROOT)  # Config files are named relative to the repository.
logging.getLogger("absl").setLevel(logging.ERROR)  # TFDS' and orbax's notices.

# %% tags=["parameters"]
# Parameters. The tests set them through the environment to a seconds-long variant.
CONFIG = os.environ.get("IG_NOTEBOOK_CONFIG", "configs/demo.py")
TOPOLOGIES = os.environ.get("IG_NOTEBOOK_TOPOLOGIES", "v5e:2x2,v5e:2x4,v4:2x2x1,v5p:2x2x1")
MFU = 0.4  # Model FLOPs utilisation assumed for the step time.

# %% [markdown]
# ## The planner
# `ig_captioner.tools.plan` compiles the trainer's step exactly as `train.py` jits it (and the
# zero-shot evaluator's cached scoring of one image batch) for compile-only TPU devices that
# libtpu describes; nothing runs on a TPU. It is imported before anything else touches jax, so
# that jax itself stays on the CPU.

# %%
import importlib.util

if importlib.util.find_spec("libtpu") is None:
  raise ModuleNotFoundError("the planner compiles with libtpu: pip install -e '.[planner]' "
                            "in the repository (the set-up cell does on Colab)")
from ig_captioner.tools import plan  # pylint: disable=g-import-not-at-top
from ig_captioner import config_lib  # pylint: disable=g-import-not-at-top

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

_, config = config_lib.load_file(CONFIG)
topologies = [t.strip() for t in TOPOLOGIES.split(",") if t.strip()]
results = {t: plan.plan(config, t, mfu=MFU) for t in topologies}
print(plan.report(results[topologies[0]]))

# %% [markdown]
# ## Per chip, for each topology
# The batch is split over the chips; params and optimizer state are replicated under the
# demo's pure data parallelism (`config.mesh.fsdp` > 1 shards them).

# %%
GIB = 2 ** 30


def row(topology, result):
  t = result["train"]
  step = t["step_seconds"]
  return (f"| {topology} | {result['chips']} | {t['params'] / GIB:.3f} | "
          f"{t['optimizer_state'] / GIB:.3f} | {t['batch'] / GIB:.3f} | "
          f"{t['temporaries'] / GIB:.3f} | {t['total'] / GIB:.3f} | "
          f"{t['total'] / result['hbm_bytes']:.1%} | "
          + ("refused |" if step is None else
             f"{step * 1e3:.2f} ms, {result['batch_size'] / step:,.0f} images/s |"))


display(Markdown(
    f"`{CONFIG}`, global batch {config.batch_size}, per chip in GiB, step time at "
    f"{MFU:.0%} MFU:\n\n"
    "| topology | chips | params | optimizer | batch | temporaries | total | of HBM | step |\n"
    "|---|---|---|---|---|---|---|---|---|\n" +
    "\n".join(row(t, r) for t, r in results.items())))

# %% [markdown]
# ## The memory options
# `config.model.remat='block'` recomputes each transformer block in the backward pass, and
# `config.objective.logits_chunk=C` computes the head and the cross-entropy C text positions at
# a time: both trade FLOPs for temporaries (the README's *Planning a pod run* has the
# paper-scale figures). Planned here for the first topology.

# %% tags=["readme-picture"]
options = config.copy_and_resolve_references()
options.model.remat = "block"
options.objective.logits_chunk = 4
with_options = plan.plan(options, topologies[0], mfu=MFU, with_eval=False)

bars = [(t, r["train"]) for t, r in results.items()]
bars.append((f"{topologies[0]}\nremat, chunk 4", with_options["train"]))
parts = (("params", "params"), ("optimizer_state", "optimizer state"), ("batch", "batch"),
         ("temporaries", "temporaries"), ("code", "generated code"))
hbm = [results.get(t, with_options)["hbm_bytes"] for t in topologies] + [
    with_options["hbm_bytes"]]
fig, ax = plt.subplots(figsize=(1.6 * len(bars) + 3, 4))
bottom = np.zeros(len(bars))
for key, name in parts:
  mib = np.array([train[key] / 2 ** 20 for _, train in bars])
  ax.bar(range(len(bars)), mib, bottom=bottom, label=name)
  bottom += mib
ax.set_xticks(range(len(bars)))
ax.set_xticklabels([label for label, _ in bars], fontsize=8)
for i, h in enumerate(hbm):
  ax.annotate(f"{bottom[i] / (h / 2 ** 20):.2%} of\n{h / GIB:.0f} GiB HBM", (i, bottom[i]),
              ha="center", va="bottom", fontsize=7)
ax.set_ylim(0, 1.3 * bottom.max())
ax.set(ylabel="MiB per chip", title=f"train step memory per chip, {CONFIG}")
ax.legend(fontsize=7)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## At paper scale
# `configs/ig_b16_laion.py` (ViT-B/16 at 224 px, batch 1024 and up) plans the same way:
# set `CONFIG = "configs/ig_b16_laion.py"` and `TOPOLOGIES = "v5e:4x4"`. Each compile takes
# minutes and 8-17 GB of host memory (more than a free Colab runtime has for the larger
# batches); the README's *Planning a pod run* lists the figures measured that way. From a
# shell: `python -m ig_captioner.tools.plan --config=configs/ig_b16_laion.py --topology=v5e:4x4`.
