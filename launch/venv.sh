# Sourced by the launch scripts: activates the project's virtual environment ($IG_CAPTIONER_VENV,
# default .venv in the repository), creating it and installing the package (with the extras
# named in $1, e.g. "test") when it is new or setup.py changed. A virtual environment also
# works where the system Python refuses `pip install` (PEP 668, "externally-managed-environment").
VENV="${IG_CAPTIONER_VENV:-$PWD/.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV" || {
    echo "error: could not create a virtual environment at $VENV. On Debian/Ubuntu install" \
         "python3-venv (apt install python3-venv), or set IG_CAPTIONER_VENV." >&2
    exit 1
  }
fi
. "$VENV/bin/activate"
STAMP="$VENV/.ig_captioner_installed${1:+_$1}"
WANT="$(sha256sum setup.py | cut -c1-64)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  python -m pip install --quiet --disable-pip-version-check -e ".${1:+[$1]}"
  echo "$WANT" > "$STAMP"
fi
