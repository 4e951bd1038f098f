#include "bench/cluster_util.h"

#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include "absl/strings/str_cat.h"

namespace geops::bench {

std::string SelfPath() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  return n > 0 ? std::string(buf, n) : std::string();
}

absl::StatusOr<std::string> GeopsNextToSelf() {
  const std::string self = SelfPath();
  const std::string geops = self.substr(0, self.rfind('/') + 1) + "geops";
  if (access(geops.c_str(), X_OK) != 0) {
    return absl::NotFoundError(absl::StrCat("no geops executable next to this one (", geops,
                                            "); build the geops target"));
  }
  return geops;
}

std::map<std::string, std::string> PassThroughEnv() {
  std::map<std::string, std::string> e;
  for (const char* name :
       {"PS_VERBOSE", "PS_HEARTBEAT_INTERVAL", "PS_HEARTBEAT_TIMEOUT", "GEOPS_STARTUP_TIMEOUT",
        "GEOPS_CONNECT_TIMEOUT", "GEOPS_GLOBAL_HEARTBEAT_TIMEOUT", "GEOPS_MAX_MESSAGE_MB",
        // Security: CURVE on the tcp tiers, the rdma secret (their cost is measured so).
        "GEOPS_LOCAL_KEYFILE", "GEOPS_GLOBAL_KEYFILE", "GEOPS_RDMA_SECRET_FILE",
        // The WAN tier's policies.
        "PS_RESEND", "PS_RESEND_TIMEOUT", "ENABLE_P3", "MXNET_KVSTORE_BIGARRAY_BOUND",
        "GEOPS_WAN_COALESCE_BYTES", "GEOPS_WAN_COALESCE_US"}) {
    if (const char* v = std::getenv(name)) e[name] = v;
  }
  return e;
}

std::string LastLine(const std::string& path) {
  std::ifstream f(path);
  std::string line, last;
  while (std::getline(f, line)) {
    if (!line.empty()) last = line;
  }
  return last;
}

}  // namespace geops::bench
