#!/usr/bin/env bash
# The main job on the embedded data: installs ig-captioner, prepares the digits data set, trains
# the standard (lambda=0) and the IG (lambda=1) captioner, evaluates both final checkpoints with
# the separate evaluator, and prints zero-shot top-1 for alpha in {0, 0.5, 1}.
#
#   bash launch/demo.sh [WORKDIR]        (default WORKDIR: /tmp/ig_captioner_demo)
#
# Data goes to $TFDS_DATA_DIR (default ~/tensorflow_datasets). Rerunning reuses finished runs.
set -euo pipefail
cd "$(dirname "$0")/.."
WORKDIR="${1:-/tmp/ig_captioner_demo}"
python3 -m pip install --quiet --disable-pip-version-check -e .
exec python3 -m ig_captioner.sweep --config=configs/demo.py --workdir="$WORKDIR"
