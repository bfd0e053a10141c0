#!/usr/bin/env bash
# Trains (and with --evaluate then evaluates) on a SLURM GPU cluster: installs the package into
# .venv here (a filesystem the nodes share; launch/venv.sh plus jax's CUDA wheels), writes a
# batch script to slurm_logs/<job>.sbatch (one task per GPU, each running the same command
# under srun) and submits it with sbatch. Outputs: slurm_logs/<job>-<id>.{out,err}.
#
#   bash launch/slurm.sh CONFIG WORKDIR --nodes=2 --gpus_per_node=8 [--partition=...]
#       [--time=24:00:00] [--evaluate] [-- --config.FIELD=VALUE ...]
#   DRY_RUN=1 bash launch/slurm.sh ...        (prints the script and commands, runs nothing)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
  echo "usage: bash launch/slurm.sh CONFIG WORKDIR [options] [-- overrides]" >&2
  exit 2
fi
exec env PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" python3 -m ig_captioner.tools.launchers slurm \
  --config="$1" --workdir="$2" ${DRY_RUN:+--dry_run} "${@:3}"
