#!/usr/bin/env bash
# The README's first command: install, build, and run the GeoMX demo
# topology (central party + parties A and B) on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
bash deploy/build.sh
exec "${GEOPS_BUILD_DIR:-build}/geops-launch" "$@"
