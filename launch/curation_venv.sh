#!/usr/bin/env bash
# Creates (or reuses) the virtual environment of the curation pipeline (Apache Beam,
# pyahocorasick: launch/curation_requirements.txt) apart from the trainer's .venv, whose pins
# apache-beam 2.77.0 would move (pyarrow, protobuf, pillow); prints its python's path. The
# checkout's ig_captioner is on that python's path (a .pth file), not installed with its pins.
#
#   PY=$(bash launch/curation_venv.sh)    (default place: .venv-curation; or set $CURATION_VENV)
#   $PY -m ig_captioner.data.curate --shards=... --metadata=... --output=DIR
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${CURATION_VENV:-$PWD/.venv-curation}"
REQUIREMENTS=launch/curation_requirements.txt
WANT="$(cat "$REQUIREMENTS" "$0" | sha256sum | cut -c1-64)"
mkdir -p "$VENV"
echo "*" > "$VENV/.gitignore"  # As python3.13's venv does: git never lists it.
exec 9>"$VENV/.curation_venv_lock"  # Test workers starting together create it once (not
# .lock: uv locks that one while it installs).
flock 9
if [ "$(cat "$VENV/.installed" 2>/dev/null)" != "$WANT" ]; then
  if command -v uv >/dev/null; then  # uv (the test extra has it) installs in seconds.
    uv venv --quiet --allow-existing --python "$(command -v python3)" "$VENV" >&2
    VIRTUAL_ENV="$VENV" uv pip install --quiet -r "$REQUIREMENTS" >&2
  else
    python3 -m venv "$VENV" >&2 || {
      echo "error: could not create a virtual environment at $VENV (Debian/Ubuntu: apt install" \
           "python3-venv), or set CURATION_VENV." >&2
      exit 1
    }
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS" >&2
  fi
  SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  echo "$PWD" > "$SITE/ig_captioner_checkout.pth"
  echo "$WANT" > "$VENV/.installed"
fi
echo "$VENV/bin/python"
