#!/usr/bin/env bash
# Trains (and with --evaluate then evaluates) on every worker of a Cloud TPU VM slice: copies
# this checkout to each worker and installs it there (launch/venv.sh, plus jax's TPU wheels),
# then starts the same command on all of them (gcloud ... ssh --worker=all), detached, logging
# to ~/ig_captioner/logs/<job>.log on each worker (--foreground: stay attached).
#
#   bash launch/tpu_vm.sh TPU_NAME ZONE CONFIG WORKDIR [options] [-- --config.FIELD=VALUE ...]
#   DRY_RUN=1 bash launch/tpu_vm.sh ...        (prints the gcloud commands, runs nothing)
#
# Options: --evaluate, --project=..., --source=GIT_URL, --env=KEY=VALUE, --setup=..., --help.
# WORKDIR should be gs://BUCKET/...: every worker writes there.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 4 ]; then
  echo "usage: bash launch/tpu_vm.sh TPU_NAME ZONE CONFIG WORKDIR [options] [-- overrides]" >&2
  exit 2
fi
exec env PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" python3 -m ig_captioner.tools.launchers tpu_vm \
  --tpu_name="$1" --zone="$2" --config="$3" --workdir="$4" ${DRY_RUN:+--dry_run} "${@:5}"
