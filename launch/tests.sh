#!/usr/bin/env bash
# The test suite, in the project's virtual environment (.venv, created or reused with the test
# extras). Arguments go to pytest, e.g. `bash launch/tests.sh -k retrieval`.
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/venv.sh test,notebooks
exec python -m pytest -q tests "$@"
