#!/usr/bin/env bash
# The test suite, in the project's virtual environment (.venv, created or reused with the test
# extras), on two pytest-xdist workers.
#
#   bash launch/tests.sh                 # everything: tests/unit, then tests/e2e (what CI runs)
#   bash launch/tests.sh --fast          # the unit tier alone (tests/unit)
#   bash launch/tests.sh -n 0 tests/unit/test_models.py -k attention   # any pytest arguments
#
# IG_CAPTIONER_TEST_CACHE=DIR keeps the compiled programs across runs (tests/conftest.py).
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/venv.sh test,notebooks
WHAT=(tests)
if [ "${1:-}" = "--fast" ]; then
  WHAT=(tests/unit)
  shift
fi
for arg in "$@"; do
  if [[ "$arg" != -* ]] && [ -e "${arg%%::*}" ]; then
    WHAT=()  # The arguments name what to run.
  fi
done
exec python -m pytest -q -n 2 --dist loadfile "${WHAT[@]}" "$@"
