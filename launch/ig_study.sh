#!/usr/bin/env bash
# The IG-objective study (configs/ig_study.py): captioners trained with lambda in {0, 0.1, 0.3, 1}
# on four caption regimes and two decoder sizes, and four variants of the text-only term, each
# with three seeds; alpha chosen on validation; prints the tables and saves the figures under
# WORKDIR. About 80 minutes on 2 CPU cores (README: "IG training: the study").
#
#   bash launch/ig_study.sh [WORKDIR]        (default WORKDIR: /tmp/ig_captioner_study)
#
# Rerunning reuses finished runs; Ctrl-C saves the running trainer's checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
WORKDIR="${1:-/tmp/ig_captioner_study}"
source launch/venv.sh "plots"
exec python -m ig_captioner.tools.sweep --config=configs/ig_study.py --workdir="$WORKDIR" "${@:2}"
