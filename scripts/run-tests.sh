#!/usr/bin/env bash
# Run the whole test suite; a run that collects no test is a failure (pytest exits 5), not a pass.
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/pytest "$@"
rc=$?
if [ $rc -eq 5 ]; then
  echo "pytest collected no tests: failing the run" >&2
  exit 1
fi
exit $rc
