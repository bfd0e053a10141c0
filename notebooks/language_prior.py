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
# # The language prior: what IG scoring takes away
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ig-captioner/ig-captioner/blob/main/notebooks/language_prior.ipynb)
#
# A captioner's zero-shot score `log P(t|I)` carries the language prior of its caption data:
# texts the captions use often score high whatever the image. This notebook looks at that
# prior in the demo's standard captioner (lambda=0) and IG captioner (lambda=1): `log P(t)` per
# class against how often the class is named in the captions, accuracy as alpha grows in
# `s(t, I) = log P(t|I) - alpha * log P(t)`, and per-class accuracy and confusion for both
# scorings.

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
RUNS = ("standard captioner", "IG captioner")  # lambda = 0 and lambda = 1.
ALPHAS = np.linspace(0.0, 2.0, 9)

# %% [markdown]
# ## The two captioners
# Both come from the demo sweep (`configs/demo.py`): the same image tower, decoder, data and
# steps; the IG captioner adds the text-only loss `lambda * CE(t | no image)` with lambda=1.
# The sweep trains and evaluates whichever of the two is missing from `DEMO_DIR` (about a
# minute each on two CPU cores) and prints the evaluator's table.

# %%
from ig_captioner import config_lib
from ig_captioner import inference
from ig_captioner import tasks
from ig_captioner.tools import sweep

module, config = config_lib.load_file(CONFIG)
sweep.run_sweep(CONFIG, DEMO_DIR, [], only=list(RUNS))
run_dirs = {r.label: os.path.join(DEMO_DIR, r.directory) for r in sweep.sweep_runs(module)}
runs = {label: inference.load_run(run_dirs[label]) for label in RUNS}
task = runs["IG captioner"].task("digits")
names, templates = task.class_names, task.templates
print(f"classes {names}\ntemplates {templates}")

# %% [markdown]
# ## The prior against the caption data
# The training captions follow a steep long tail of concepts (Zipf exponent
# `config.data.prior_exponent`), and half of them name a popular concept instead of the digit
# shown (`caption_noise`). Below: how often each class name occurs in the training captions,
# against `log P(t)` of its prompts (mean over the templates), from each decoder run without the
# image. The IG captioner's text-only loss trains exactly this distribution; the standard
# captioner never sees a text without its image, yet in the demo's runs its text path carries
# the prior as well (r = 0.99 against the log frequency, 1.00 for the IG captioner).

# %%
train_split = tasks.read_examples(task.data_config, config.data.train_split,
                                      label_key=None, text_key=config.data.text_key)
words = [set(text.split()) for texts in train_split.texts_B for text in texts]
frequency_C = np.array([np.mean([name in w for w in words]) for name in names])
prompts = inference.prompts(names, templates)
prior_C = {label: run.prior(prompts).reshape(len(names), len(templates)).mean(-1)
           for label, run in runs.items()}

fig, axes = plt.subplots(1, len(RUNS), figsize=(5.5 * len(RUNS), 4), squeeze=False)
for ax, (label, logp_C) in zip(axes[0], prior_C.items()):
  ax.scatter(frequency_C, logp_C)
  for c, name in enumerate(names):
    ax.annotate(name, (frequency_C[c], logp_C[c]), fontsize=8, xytext=(3, 3),
                textcoords="offset points")
  ax.set_xscale("log")
  r = np.corrcoef(np.log(np.maximum(frequency_C, 1e-6)), logp_C)[0, 1]
  ax.set(xlabel="share of training captions naming the class",
         ylabel="log P(t), mean over templates (nats)", title=f"{label}: r = {r:.2f}")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Accuracy against alpha
# `s(t, I) = log P(t|I) - alpha * log P(t)` on the held-out split (class balanced):
# `alpha=0` is the standard scoring, `alpha=1` the IG captioner's.

# %%
held_out = task.examples()
labels_B = held_out.labels_B
scores = {label: run.classify(held_out.images_BxHxWx3, names, templates, alphas=ALPHAS,
                              top_k=1)["ig"] for label, run in runs.items()}
top1 = {label: [np.mean(s[float(a)]["topk_BxK"][:, 0] == labels_B) for a in ALPHAS]
        for label, s in scores.items()}

fig, ax = plt.subplots(figsize=(6, 4))
for label, accuracy in top1.items():
  ax.plot(ALPHAS, 100 * np.asarray(accuracy), marker="o", label=label)
ax.axhline(100 / len(names), color="grey", linestyle=":", label="chance")
ax.set(xlabel="alpha", ylabel=f"top-1 (%), {len(labels_B)} held-out images",
       title="zero-shot accuracy against alpha")
ax.legend()
plt.show()
for label, accuracy in top1.items():
  print(f"{label}: alpha=0 {100 * accuracy[0]:.1f}%, alpha=1 "
        f"{100 * accuracy[list(ALPHAS).index(1.0)]:.1f}%, best "
        f"{100 * max(accuracy):.1f}% at alpha={ALPHAS[int(np.argmax(accuracy))]:g}")

# %% [markdown]
# ## Per class: where the prior pulls
# Per-class accuracy and confusion matrices for both scorings (`alpha` 0 and 1) of both
# models. Under `alpha=0` predictions drift to the classes the captions name most often; the
# IG score takes that pull away.

# %% tags=["readme-picture"]
num_classes = len(names)
predicted = {(label, a): scores[label][a]["topk_BxK"][:, 0] for label in RUNS for a in (0.0, 1.0)}
fig = plt.figure(figsize=(3.6 * len(predicted), 7.5))
grid = fig.add_gridspec(2, len(predicted), height_ratios=(1, 1.25))
axes = [fig.add_subplot(grid[0, :])] + [fig.add_subplot(grid[1, i]) for i in range(len(predicted))]
width = 0.8 / len(predicted)
for i, ((label, a), pred_B) in enumerate(predicted.items()):
  per_class = [np.mean(pred_B[labels_B == c] == c) for c in range(num_classes)]
  axes[0].bar(np.arange(num_classes) + (i - len(predicted) / 2 + 0.5) * width,
              100 * np.asarray(per_class), width, label=f"{label}, alpha={a:g}")
  confusion_CxC = np.zeros((num_classes, num_classes))
  np.add.at(confusion_CxC, (labels_B, pred_B), 1)
  ax = axes[i + 1]
  ax.imshow(confusion_CxC / confusion_CxC.sum(1, keepdims=True), cmap="Blues", vmin=0, vmax=1)
  ax.set(title=f"{label}, alpha={a:g}\ntop-1 {100 * np.mean(pred_B == labels_B):.1f}%",
         xlabel="predicted", ylabel="true", xticks=range(num_classes),
         yticks=range(num_classes))
  ax.set_xticklabels(names, rotation=90, fontsize=7)
  ax.set_yticklabels(names, fontsize=7)
axes[0].set_xticks(range(num_classes))
axes[0].set_xticklabels(names, fontsize=8)
axes[0].set(ylabel="per-class top-1 (%)", title="per-class accuracy", ylim=(0, 125))
axes[0].legend(fontsize=8, ncol=2)
fig.tight_layout()
plt.show()
