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
# # Comparing families: captioners, IG captioners, CLIP, SigLIP, CoCa, CapPa
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ig-captioner/ig-captioner/blob/main/notebooks/comparing_families.ipynb)
#
# The demo sweep trains the six models of the IG paper's comparison with the same image tower,
# images, steps and batch. This notebook draws the sweep's comparison table and shows
# text-to-image retrieval by each model, with the images.

# %%
# Set-up. On Colab: fetch the repository and install it (a few minutes; restart the runtime
# if Colab asks, then run on). Elsewhere: the checkout holding this notebook, installed with
# `pip install -e '.[plots]'` (or `bash launch/tests.sh`, which installs the notebook extras).
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
                  f"{COLAB_CHECKOUT}[plots]"], check=True)
  sys.path.insert(0, str(COLAB_CHECKOUT))
for ROOT in (pathlib.Path.cwd(), *pathlib.Path.cwd().parents, COLAB_CHECKOUT):
  if (ROOT / "configs" / "demo.py").exists():
    break
else:
  raise FileNotFoundError("run this notebook from a checkout of ig-captioner (configs/ is "
                          f"looked for from {pathlib.Path.cwd()} upwards)")
os.chdir(ROOT)  # Config files are named relative to the repository.
logging.getLogger("absl").setLevel(logging.ERROR)  # TFDS' and orbax's notices.

import matplotlib.pyplot as plt
import numpy as np

# %% tags=["parameters"]
# Parameters. The tests set them through the environment to a seconds-long variant.
CONFIG = os.environ.get("IG_NOTEBOOK_CONFIG", "configs/demo.py")
# The demo sweep's directory (`bash launch/demo.sh` writes it); missing runs are trained here.
DEMO_DIR = os.environ.get("IG_NOTEBOOK_DEMO_DIR", "/tmp/ig_captioner_demo")
RUNS = os.environ.get("IG_NOTEBOOK_RUNS", "")  # Comma-separated labels; empty: every run.
QUERIES = 3  # Texts (one per class) and images shown in the retrieval examples.

# %% [markdown]
# ## The runs
# The sweep trains and evaluates whichever runs are missing from `DEMO_DIR` (about a minute
# each on two CPU cores; all six are `bash launch/demo.sh`), prints the comparison tables and
# keeps them in `summary.json`, which the figure below draws.

# %%
from ig_captioner import config_lib
from ig_captioner import inference
from ig_captioner import tasks
from ig_captioner.tools import sweep
from ig_captioner.tools import sweep_hooks
from ig_captioner.tools import sweep_tables

module, config = config_lib.load_file(CONFIG)
all_runs = sweep.sweep_runs(module)
labels = [r.strip() for r in RUNS.split(",") if r.strip()] or [r.label for r in all_runs]
sweep.run_sweep(CONFIG, DEMO_DIR, [], only=labels)
summary = dict(sweep_tables.read_summary(os.path.join(DEMO_DIR, sweep_tables.SUMMARY)))
run_dirs = {r.label: os.path.join(DEMO_DIR, r.directory) for r in all_runs}

# %% [markdown]
# ## The comparison table as a figure
# The rows and columns of the sweep's first table (`sweep_tables()` in the config). Families
# scoring by caption likelihood get a row per alpha of `s(t, I) = log P(t|I) - alpha * log P(t)`;
# text-to-image recall does not change with alpha (the prior is the same for every image of a
# text), so those rows repeat it.

# %% tags=["readme-picture"]
hooks = sweep_hooks.of(module, CONFIG)
tables, alphas = hooks.tables() if hooks.tables else sweep_tables.default_tables(config)
title, columns = tables[0]

rows = [(label, row, values) for label in labels
        for row, values in sweep_tables.table_values(label, summary[label], columns, alphas)]
colors = {label: plt.get_cmap("tab10")(i % 10) for i, label in enumerate(labels)}
fig, axes = plt.subplots(1, len(columns), figsize=(4.2 * len(columns), 0.32 * len(rows) + 1.4),
                         sharey=True, squeeze=False)
for c, (ax, column) in enumerate(zip(axes[0], columns)):
  for y, (label, row, values) in enumerate(rows):
    v = values[c]
    v = v.mean if isinstance(v, sweep_tables.Spread) else v  # Seeds: their mean.
    if v is not None:
      ax.barh(y, 100 * v, color=colors[label], hatch="//" if "alpha=0" in row else None,
              edgecolor="white")
      ax.text(100 * v + 1, y, f"{100 * v:.1f}", va="center", fontsize=7)
  ax.set(title=column, xlabel="%", xlim=(0, 105))
axes[0][0].set_yticks(range(len(rows)))
axes[0][0].set_yticklabels([row for _, row, _ in rows], fontsize=8)
axes[0][0].invert_yaxis()
fig.suptitle(f"{CONFIG}: {title} (hatched: alpha=0)", fontsize=10)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Retrieval, with images
# For a few texts of the retrieval split, the five images each model ranks first (a green
# frame: an image of the text's class). Captioners rank by `log P(t|I)`; two-tower models and
# CoCa by the cosine similarity of their embeddings (`retrieval_scores` picks as the
# retrieval evaluator does).

# %%
runs = {label: inference.load_run(run_dirs[label]) for label in labels}
task = runs[labels[0]].task(kind="retrieval")
examples = tasks.read_examples(task.data_config, task.split, text_key=task.text_key)
texts = [t for texts in examples.texts_B for t in texts]
text_label_P = np.repeat(examples.labels_B, [len(t) for t in examples.texts_B])
# A query per class, its second phrasing, for the first QUERIES classes met.
queries = [p + 1 for p in np.unique(text_label_P, return_index=True)[1]][:QUERIES]

fig = plt.figure(figsize=(3.8 * len(queries) + 1.3, 0.85 * len(labels) + 0.8))
panels = fig.subfigures(1, len(queries), width_ratios=[1.35] + [1] * (len(queries) - 1))
scores = {label: run.retrieval_scores(examples.images_BxHxWx3, [texts[p] for p in queries])
          for label, run in runs.items()}
for q, (panel, p) in enumerate(zip(np.atleast_1d(panels), queries)):
  panel.suptitle(f"\"{texts[p]}\"", fontsize=9)
  axes = panel.subplots(len(labels), 5, squeeze=False)
  for m, label in enumerate(labels):
    for ax, b in zip(axes[m], np.argsort(-scores[label][:, q])[:5]):
      ax.imshow(examples.images_BxHxWx3[b])
      same = examples.labels_B[b] == text_label_P[p]
      for side in ax.spines.values():
        side.set(color="green" if same else "red", linewidth=2.5)
      ax.set_xticks([])
      ax.set_yticks([])
    if q == 0:  # Model names once, left of the first panel.
      axes[m][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
plt.show()
