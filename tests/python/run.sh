#!/bin/sh
# ctest's python_tests: pytest over tests/python with the interpreter the
# module was built for; exits 77 (skipped) when pytest is missing.
py=$1 build=$2 here=$(dirname "$0")
if ! "$py" -c "import pytest" 2>/dev/null; then
  echo "skipped: pytest is not installed for $py (apt-get install python3-pytest)"; exit 77
fi
if ! "$py" -c "import torch" 2>/dev/null; then
  echo "note: torch is not installed for $py (apt-get install python3-torch): its tests are skipped"
fi
PYTHONPATH="$build/python${PYTHONPATH:+:$PYTHONPATH}" GEOPS_BUILD_DIR="$build" \
  exec "$py" -m pytest -q -p no:cacheprovider "$here"
