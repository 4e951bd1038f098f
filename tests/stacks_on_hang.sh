#!/usr/bin/env bash
# stacks_on_hang.sh SECS cmd...: runs cmd; if it is still running after
# SECS seconds, prints every thread's stack of it and of every process it
# started (gdb, when installed), kills them and exits 124. A hung test then
# says where it hung instead of running into the VM's timeout silently.
set -uo pipefail
limit=$1
shift
"$@" &
pid=$!
for ((s = 0; s < limit; ++s)); do
  kill -0 "$pid" 2>/dev/null || break
  sleep 1
done
if ! kill -0 "$pid" 2>/dev/null; then
  wait "$pid"
  exit $?
fi
tree() {
  echo "$1"
  local child
  for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do tree "$child"; done
}
procs=$(tree "$pid")
echo "stacks_on_hang: '$*' still running after ${limit} s; thread stacks follow" >&2
for p in $procs; do
  echo "---- process $p: $(tr '\0' ' ' </proc/"$p"/cmdline 2>/dev/null)" >&2
  if command -v gdb >/dev/null; then
    gdb -p "$p" -batch -ex 'thread apply all bt' 2>/dev/null | grep -E '^(Thread|#)' >&2
  else
    echo "(install gdb for stacks)" >&2
  fi
done
kill -9 $procs 2>/dev/null
exit 124
