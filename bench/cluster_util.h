// What the benches that start a whole cluster (geops-bench-kv --local /
// --geomx, geops-bench-geo) share: where `geops` is, which of our variables
// every process gets, and why a process failed.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/base/config.h"
#include "core/cluster/tier_node.h"
#include "core/kv/kv_worker.h"

namespace geops::bench {

// This executable's path.
std::string SelfPath();
// The `geops` next to this executable, or why there is none.
absl::StatusOr<std::string> GeopsNextToSelf();
// Our variables from this environment worth handing to every process (the
// launcher passes no DMLC_/PS_/GEOPS_ variable of its own environment on).
std::map<std::string, std::string> PassThroughEnv();
// The last non-empty line of a file: usually why a process failed.
std::string LastLine(const std::string& path);

// A bench worker's life in a cluster the bench started: its Config from
// the DMLC_* environment (`not_a_worker` is the error when DMLC_ROLE is not
// worker), its tier joined, `body` run (with whether the scheduler made it
// a trainer), then the tier left, or aborted naming the worker's error.
using WorkerBody = std::function<absl::Status(const Config&, TierNode&, KVWorker<float>&, bool trains)>;
absl::Status RunBenchWorker(const std::string& not_a_worker, const WorkerBody& body);

// main() of a bench that starts its own cluster: a process started with
// `exec_var` set (and no arguments) becomes that program (`geops`) at
// once; otherwise Ctrl-C stops the whole cluster, and an error from `run`
// is printed as "NAME: message", exit status 2 for bad usage, else 1.
int ClusterBenchMain(int argc, char** argv, const char* name, const char* exec_var,
                     const std::function<absl::Status(std::vector<std::string>)>& run);

}  // namespace geops::bench
