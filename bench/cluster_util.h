// What the benches that start a whole cluster (geops-bench-kv --local /
// --geomx, geops-bench-geo) share: where `geops` is, which of our variables
// every process gets, and why a process failed.
#pragma once

#include <map>
#include <string>

#include "absl/status/statusor.h"

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

}  // namespace geops::bench
