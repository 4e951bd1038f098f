# Sourced by the tests that run inside the SoftRoCE VM (tests/*_in_vm.sh
# taking BUILD_DIR SOURCE_DIR): `in_vm_or_reexec TIMEOUT SCRIPT BUILD_DIR
# SOURCE_DIR` returns inside the VM; outside it runs SCRIPT there (the
# current process is replaced), or exits 77 (CTest: skipped) when the VM
# tool is not beside this checkout.
in_vm_or_reexec() {
  local timeout=$1 script=$2 build_dir=$3 source_dir=$4
  [ "${GEOPS_IN_LAB_VM:-}" = 1 ] && return 0
  local vm=${GEOPS_SOFTROCE_VM:-$source_dir/../shared/tools/softroce-vm/run-in-softroce-vm.sh}
  if [ ! -x "$vm" ]; then
    echo "skipped: no SoftRoCE VM tool at $vm (set GEOPS_SOFTROCE_VM)"
    exit 77
  fi
  cd "$source_dir"
  exec "$vm" -t "$timeout" -e GEOPS_IN_LAB_VM=1 -- bash "$script" "$build_dir" "$source_dir"
}
