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
# # Quickstart: train an IG captioner, classify digits zero-shot
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ig-captioner/ig-captioner/blob/main/notebooks/quickstart.ipynb)
#
# A captioner classifies an image by scoring each class prompt `t` with `log P(t|I)`; the IG
# captioner subtracts the language prior, `s(t, I) = log P(t|I) - alpha * log P(t)`, with
# `log P(t)` from the same decoder run without the image. This notebook trains a tiny IG
# captioner on the embedded `digits_captions` data set (built offline from scikit-learn's
# handwritten digits; about a minute on two CPU cores), loads it through
# `ig_captioner.inference`, and shows a few held-out images with their top classes under
# `alpha=0` (the standard scoring) and `alpha=1` (IG scoring), and the captions it writes.

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

# %% tags=["parameters"]
# Parameters. The tests set them through the environment to a seconds-long variant.
CONFIG = os.environ.get("IG_NOTEBOOK_CONFIG", "configs/demo.py")  # + ":family=..." etc.
WORKDIR = os.path.join(os.environ.get("IG_NOTEBOOK_WORKDIR", "/tmp/ig_captioner_notebooks"),
                       "quickstart")

# %% [markdown]
# ## Train
# `configs/demo.py` is the main job's config: a ViT image tower at 32 px and a two-layer text
# decoder, trained with the IG objective `CE(t|I) + lambda * CE(t|no image)` (lambda is
# `config.objective.text_only_weight`). Training resumes from the last checkpoint in `WORKDIR`,
# so running this cell again returns at once.

# %%
import matplotlib.pyplot as plt
import numpy as np

from ig_captioner import config_lib
from ig_captioner import inference
from ig_captioner import metric_files
from ig_captioner import train

_, config = config_lib.load_file(CONFIG)
print(f"{config.model.name} with lambda={config.objective.text_only_weight}: "
      f"{config.total_steps} steps of {config.batch_size} pairs")
train.train(config, WORKDIR)
last = metric_files.read_jsonl(metric_files.jsonl_path(WORKDIR, "train"))[-1]
print(f"step {last['step']}: loss {last['loss']:.3f}")

# %% [markdown]
# ## Load the run and classify
# `load_run` restores the latest checkpoint onto this machine's devices; `task("digits")` is
# the zero-shot evaluator of the config: its held-out split, class names and prompt templates.

# %%
run = inference.load_run(WORKDIR)
task = run.task("digits")
examples = task.examples(num=8)
out = run.classify(examples.images_BxHxWx3, task.class_names, task.templates,
                   alphas=(0.0, 1.0), top_k=3)
print(f"step {run.step}; classes {task.class_names}; templates {task.templates}")

# %% tags=["readme-picture"]
columns = 4
rows = -(-len(examples.labels_B) // columns)
fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 3.2 * rows), squeeze=False,
                         gridspec_kw={"hspace": 0.55, "wspace": 0.1})
for i, ax in enumerate(axes.flat):
  ax.set_axis_off()
  if i >= len(examples.labels_B):
    continue
  ax.imshow(examples.images_BxHxWx3[i])
  ax.set_title(f"true: {task.class_names[examples.labels_B[i]]}", fontsize=9)
  for j, alpha in enumerate((0.0, 1.0)):
    top_K = out["ig"][alpha]["topk_BxK"][i]
    ax.text(0, -0.04 - 0.12 * j, f"a={alpha:g}: " + ", ".join(task.class_names[c] for c in top_K),
            transform=ax.transAxes, va="top", fontsize=8,
            color="green" if top_K[0] == examples.labels_B[i] else "red")
fig.suptitle("top-3 classes under log P(t|I) (a=0) and log P(t|I) - log P(t) (a=1);\n"
             "green: the first is right", fontsize=10)
plt.show()

# %% [markdown]
# ## Accuracy on the whole held-out split, and captions
# The same scores as the zero-shot evaluator (`python -m ig_captioner.evaluate`); `caption`
# decodes greedily with the KV cache (`beam_size=4` for beam search).

# %%
held_out = task.examples()
scores = run.classify(held_out.images_BxHxWx3, task.class_names, task.templates,
                      alphas=task.alphas, top_k=1)
for alpha, result in scores["ig"].items():
  top1 = np.mean(result["topk_BxK"][:, 0] == held_out.labels_B)
  print(f"alpha={alpha:g}: top-1 {100 * top1:.1f}% of {len(held_out.labels_B)} images")
for label, caption in zip(examples.labels_B, run.caption(examples.images_BxHxWx3)):
  print(f"{task.class_names[label]:>6}: {caption}")
