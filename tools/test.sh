#!/usr/bin/env bash
# README command 2: set up, then run the whole test suite under a virtual display.
# Extra arguments go to pytest (e.g. `bash tools/test.sh -k cli`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash tools/setup.sh

# Lint first: a tree that is not ruff-clean and ruff-formatted fails before any test runs.
.venv/bin/ruff check .
.venv/bin/ruff format --check .

export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
runner=()
if [[ -z "${DISPLAY:-}" ]] && command -v xvfb-run >/dev/null 2>&1; then
  runner=(xvfb-run -a -s "-screen 0 1280x1024x24")
fi
status=0
"${runner[@]}" .venv/bin/python -m pytest -p no:cacheprovider -q -rfEs --durations=10 "$@" \
  2>&1 | tee "$log" || status=$?
if ((status == 0)) && ! grep -Eq '[0-9]+ passed' "$log"; then
  echo "test.sh: no test passed (nothing collected, or everything skipped)" >&2
  exit 1
fi
exit "$status"
