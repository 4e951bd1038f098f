#!/usr/bin/env bash
# Installs geops into a scratch prefix and builds a program against it with
# find_package(geops), as a user's training program would.
set -euo pipefail
build_dir=$1
source_dir=$2
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cmake --install "$build_dir" --prefix "$scratch/prefix" >/dev/null
test -x "$scratch/prefix/bin/geops"
test -x "$scratch/prefix/bin/geops-launch"
# The rdma transport is private: none of its (verbs-including) headers ship.
test -f "$scratch/prefix/include/geops/core/transport/transport.h"
test ! -e "$scratch/prefix/include/geops/core/transport/rdma"
# Through a file: grep -q closing the pipe early would kill geops with
# SIGPIPE and fail the pipeline under pipefail.
"$scratch/prefix/bin/geops" --help > "$scratch/help.txt"
grep -q DMLC_ROLE_MASTER_WORKER "$scratch/help.txt"
cmake -S "$source_dir/tests/consumer" -B "$scratch/consumer" \
  -DCMAKE_PREFIX_PATH="$scratch/prefix" >/dev/null
cmake --build "$scratch/consumer" >/dev/null
"$scratch/consumer/consumer" > "$scratch/consumer.txt"
grep -q "consumer ok" "$scratch/consumer.txt"
# The umbrella header alone is the whole user API, installed as in the tree.
test -f "$scratch/prefix/include/geops/geops/geops.h"
"$scratch/consumer/umbrella" > "$scratch/umbrella.txt"
grep -q "umbrella ok" "$scratch/umbrella.txt"
echo "installed package found and linked"
# The Python package, when built: where the install put it, importable.
py=$(sed -n 's/^Python3_EXECUTABLE:[A-Z]*=//p' "$build_dir/CMakeCache.txt")
if [ -f "$build_dir/python/geops/__init__.py" ] && [ -n "$py" ]; then
  site=$(sed -n 's/^GEOPS_PYTHON_INSTALL_DIR:[A-Z]*=//p' "$build_dir/CMakeCache.txt")
  (cd "$scratch" && PYTHONPATH="$scratch/prefix/$site" "$py" -c \
    'import geops, geops._geops; assert geops.__file__.startswith("'"$scratch"'")')
  test -f "$scratch/prefix/share/geops/examples/fashion_mnist_cnn.py"
  echo "installed Python package imported from $site"
fi
