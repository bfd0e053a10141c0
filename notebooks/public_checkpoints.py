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
# # Public checkpoints: IG-score an open_clip CoCa
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ig-captioner/ig-captioner/blob/main/notebooks/public_checkpoints.ipynb)
#
# A public CoCa is a captioner: it gives `log P(t|I)` for any text. This notebook downloads
# one from the Hugging Face hub (`laion/CoCa-ViT-B-32-laion2B-s13B-b90k` by default), converts
# it into a run of this codebase (`python -m ig_captioner.convert`, see docs/converting.md), and
# classifies a few images zero-shot with the IG score
# `s(t, I) = log P(t|I) - alpha * log P(t)` at alpha 0 and 1, for both sources of the prior
# `log P(t)`: `no_image` (the decoder with cross-attention skipped, the IG paper's) and
# `null_image` (the decoder given a blank mid-grey image). A public CoCa never saw a text
# without an image in training, so which prior serves it better is an empirical question.
#
# Offline (as in the tests) it runs on a tiny random-weight CoCa written by open_clip's own
# code (`tests/fixtures/open_clip/`), so the classes it ranks first mean nothing there.

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
                  f"{COLAB_CHECKOUT}[plots]", "huggingface_hub"], check=True)
  sys.path.insert(0, str(COLAB_CHECKOUT))
for ROOT in (pathlib.Path.cwd(), *pathlib.Path.cwd().parents, COLAB_CHECKOUT):
  if (ROOT / "configs" / "converted.py").exists():
    break
else:
  raise FileNotFoundError("run this notebook from a checkout of ig-captioner (configs/ is "
                          f"looked for from {pathlib.Path.cwd()} upwards)")
os.chdir(ROOT)  # Config files are named relative to the repository.
sys.path.insert(0, str(ROOT))  # The offline fixture lives under tests/.
logging.getLogger("absl").setLevel(logging.ERROR)  # TFDS' and orbax's notices.

# %% tags=["parameters"]
# Parameters. The tests set them through the environment: CHECKPOINT='fixture' runs offline.
CHECKPOINT = os.environ.get("IG_NOTEBOOK_CHECKPOINT",
                            "laion/CoCa-ViT-B-32-laion2B-s13B-b90k")  # A hub repository.
ARCHITECTURE = "coca_ViT-B-32"  # Its open_clip architecture name.
CONFIG = os.environ.get("IG_NOTEBOOK_CONVERTED_CONFIG", "configs/converted.py")
WORKDIR = os.path.join(os.environ.get("IG_NOTEBOOK_WORKDIR", "/tmp/ig_captioner_notebooks"),
                       "public_checkpoints")

# %% [markdown]
# ## Download and convert
# The hub file `open_clip_model.safetensors` is read without torch. The converted run (a
# `config.json` and the params at step 0) is written once: running this cell again reuses it.

# %%
import matplotlib.pyplot as plt
import numpy as np

from ig_captioner import config_lib
from ig_captioner import inference
from ig_captioner.convert import __main__ as convert
from ig_captioner.data import prepare

RUN_DIR = os.path.join(WORKDIR, "run")
if CHECKPOINT == "fixture":
  from tests.fixtures.open_clip import clip_vocab  # pylint: disable=g-import-not-at-top
  ARCHITECTURE, WEIGHTS = clip_vocab.widen("coca_tiny", os.path.join(WORKDIR, "fixture"),
                                           context_length=20)
else:
  import huggingface_hub  # pylint: disable=g-import-not-at-top
  WEIGHTS = huggingface_hub.hf_hub_download(CHECKPOINT, "open_clip_model.safetensors")
if not os.path.exists(os.path.join(RUN_DIR, "config.json")):
  _, base_config = config_lib.load_file(CONFIG)
  convert.convert("open_clip", ARCHITECTURE, WEIGHTS, RUN_DIR, base_config)
run = inference.load_run(RUN_DIR)
prepare.ensure_prepared(run.config)  # The evaluators' data (the embedded digits: seconds).
print(f"{run.family}: {run.config.converted_from.num_params:,} params from {CHECKPOINT}")

# %% [markdown]
# ## Classify with both priors
# `task("digits")` is the converted config's zero-shot evaluator: the embedded handwritten
# digits, their class names and prompt templates. `classify` scores every prompt of every class
# with the cached decoder (the image's keys and values once, each template's shared words once)
# and averages over templates; `prior=` picks the source of `log P(t)`.

# %%
task = run.task("digits")
examples = task.examples(num=4)
results = {prior: run.classify(examples.images_BxHxWx3, task.class_names, task.templates,
                               alphas=(0.0, 1.0), top_k=3, prior=prior)
           for prior in ("no_image", "null_image")}
texts = [t.format(c) for c in task.class_names[:3] for t in task.templates[:1]]
for prior in ("no_image", "null_image"):
  print(f"log P(t) by {prior}: " + ", ".join(
      f"{t!r} {p:.1f}" for t, p in zip(texts, run.prior(texts, source=prior))))

# %% tags=["readme-picture"]
columns = len(examples.labels_B)
fig, axes = plt.subplots(1, columns, figsize=(2.8 * columns, 3.6), squeeze=False)
rows = [("a=0", results["no_image"]["ig"][0.0]),
        ("a=1, no_image", results["no_image"]["ig"][1.0]),
        ("a=1, null_image", results["null_image"]["ig"][1.0])]
for i, ax in enumerate(axes.flat):
  ax.set_axis_off()
  ax.imshow(examples.images_BxHxWx3[i])
  ax.set_title(f"true: {task.class_names[examples.labels_B[i]]}", fontsize=9)
  for j, (label, result) in enumerate(rows):
    top_K = result["topk_BxK"][i]
    ax.text(0, -0.04 - 0.12 * j, f"{label}: " + ", ".join(task.class_names[c] for c in top_K),
            transform=ax.transAxes, va="top", fontsize=8,
            color="green" if top_K[0] == examples.labels_B[i] else "red")
fig.suptitle(f"{CHECKPOINT}: top-3 classes by log P(t|I) - alpha log P(t), two priors",
             fontsize=10)
plt.show()

# %% [markdown]
# ## The whole held-out split
# The same numbers as `python -m ig_captioner.evaluate --workdir=RUN_DIR --once` (whose
# zero-shot evaluator takes `prior='null_image'` in its config for the second row), next to the
# CoCa's contrastive embeddings.

# %%
held_out = task.examples()
for prior in ("no_image", "null_image"):
  scores = run.classify(held_out.images_BxHxWx3, task.class_names, task.templates,
                        alphas=task.alphas, top_k=1, prior=prior)
  for alpha, result in scores["ig"].items():
    top1 = np.mean(result["topk_BxK"][:, 0] == held_out.labels_B)
    print(f"prior {prior}, alpha={alpha:g}: top-1 {100 * top1:.1f}% of "
          f"{len(held_out.labels_B)} images")
top1 = np.mean(scores["embedding"]["topk_BxK"][:, 0] == held_out.labels_B)
print(f"embeddings: top-1 {100 * top1:.1f}%")
