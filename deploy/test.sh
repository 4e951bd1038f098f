#!/usr/bin/env bash
# The README's second command: install, build, and run every test; then the
# checking stage (deploy/checks.sh: the suite under ASan+UBSan and TSan, and
# the codec fuzzer), which CI runs. GEOPS_CHECKS=0 skips that stage for a
# quick local run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
bash deploy/build.sh
(cd "${GEOPS_BUILD_DIR:-build}" && ctest --output-on-failure --timeout 600 "$@")
if [ "${GEOPS_CHECKS:-1}" != 0 ]; then
  bash deploy/checks.sh
fi
