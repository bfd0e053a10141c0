#!/usr/bin/env bash
# Trains (and with --evaluate then evaluates) on TPU slices of a GKE cluster: one
# `xpk workload create` whose every pod runs the same command. The image either has the
# package installed (--docker_image) or is a base that xpk adds this checkout to
# (--base_docker_image; .dockerignore's paths are left out).
#
#   bash launch/xpk.sh CLUSTER TPU_TYPE CONFIG WORKDIR --zone=Z --project=P \
#       --docker_image=IMAGE [--num_slices=N] [--evaluate] [-- --config.FIELD=VALUE ...]
#   DRY_RUN=1 bash launch/xpk.sh ...    (xpk --dry-run: prints the JobSet, contacts nothing)
#
# xpk comes from .venv-xpk (bash launch/xpk_venv.sh makes it) when it exists, else from PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 4 ]; then
  echo "usage: bash launch/xpk.sh CLUSTER TPU_TYPE CONFIG WORKDIR [options] [-- overrides]" >&2
  exit 2
fi
XPK="${XPK:-$([ -x .venv-xpk/bin/xpk ] && echo "$PWD/.venv-xpk/bin/xpk" || echo xpk)}"
exec env PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" python3 -m ig_captioner.tools.launchers xpk \
  --cluster="$1" --tpu_type="$2" --config="$3" --workdir="$4" --xpk_binary="$XPK" \
  ${DRY_RUN:+--xpk_dry_run} "${@:5}"
