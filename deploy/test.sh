#!/usr/bin/env bash
# The README's second command: install, build, and run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
bash deploy/build.sh
cd "${GEOPS_BUILD_DIR:-build}"
ctest --output-on-failure --timeout 600 "$@"
