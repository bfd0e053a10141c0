#!/usr/bin/env bash
# The main job on the embedded data: the IG paper's comparison at CPU scale. Creates (or reuses)
# the virtual environment .venv with the package, prepares the digits data set, trains the
# standard (lambda=0) and the IG (lambda=1) captioner, CLIP and SigLIP with the same image tower,
# data, steps and batch, evaluates each final checkpoint with the separate evaluator, and prints
# zero-shot top-1 and retrieval R@1 for every model.
#
#   bash launch/demo.sh [WORKDIR]        (default WORKDIR: /tmp/ig_captioner_demo)
#
# Data goes to $TFDS_DATA_DIR (default ~/tensorflow_datasets). Rerunning reuses finished runs;
# Ctrl-C saves the running trainer's checkpoint, and rerunning resumes it.
set -euo pipefail
cd "$(dirname "$0")/.."
WORKDIR="${1:-/tmp/ig_captioner_demo}"
source launch/venv.sh captioning
exec python -m ig_captioner.tools.sweep --config=configs/demo.py --workdir="$WORKDIR"
