#!/usr/bin/env bash
# The prefix-conditioning study (configs/prefix.py): CLIP and the IG captioner trained on caption
# data mixed with style-shifted classification data, without and with dataset-type prefix
# tokens, tested with each prefix on the held-out split and its style-shifted version.
#
#   bash launch/prefix_study.sh [WORKDIR]        (default WORKDIR: /tmp/ig_captioner_prefix)
set -euo pipefail
cd "$(dirname "$0")/.."
WORKDIR="${1:-/tmp/ig_captioner_prefix}"
source launch/venv.sh ""
exec python -m ig_captioner.tools.sweep --config=configs/prefix.py --workdir="$WORKDIR"
