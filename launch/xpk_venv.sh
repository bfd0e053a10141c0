#!/usr/bin/env bash
# Creates (or reuses) a virtual environment holding xpk, the GKE launcher, apart from the
# project's (xpk pins its dependencies strictly), and prints its xpk executable's path.
#
#   XPK=$(bash launch/xpk_venv.sh)        (default place: .venv-xpk; or set $XPK_VENV)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${XPK_VENV:-$PWD/.venv-xpk}"
VERSION=1.16.0
if [ "$("$VENV/bin/xpk" version 2>/dev/null | grep -o "$VERSION" | head -1)" != "$VERSION" ]; then
  if command -v uv >/dev/null; then  # uv (the test extra has it) installs in seconds, pip in ~40.
    uv venv --quiet --allow-existing "$VENV" >&2
    VIRTUAL_ENV="$VENV" uv pip install --quiet "xpk==$VERSION" >&2
  else
    python3 -m venv "$VENV" >&2 || {
      echo "error: could not create a virtual environment at $VENV (Debian/Ubuntu: apt install" \
           "python3-venv), or set XPK_VENV." >&2
      exit 1
    }
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-compile \
        "xpk==$VERSION" >&2
  fi
fi
echo "$VENV/bin/xpk"
