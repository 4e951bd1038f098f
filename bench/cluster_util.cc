#include "bench/cluster_util.h"

#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "core/node/worker_node.h"
#include "deploy/launcher.h"

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
        "PS_RESEND", "PS_RESEND_TIMEOUT", "ENABLE_P3", "GEOPS_WAN_WINDOW_KB", "MXNET_KVSTORE_BIGARRAY_BOUND",
        "GEOPS_WAN_COALESCE_BYTES", "GEOPS_WAN_COALESCE_US", "GEOPS_WAN_DTYPE", "GEOPS_WAN_TOPK",
        "MXNET_KVSTORE_SIZE_LOWER_BOUND", "GEOPS_WAN_SYNC", "GEOPS_WAN_STALENESS",
        "MXNET_KVSTORE_USE_HFA", "MXNET_KVSTORE_HFA_K1", "MXNET_KVSTORE_HFA_K2"}) {
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

absl::Status RunBenchWorker(const std::string& not_a_worker, const WorkerBody& body) {
  auto c = ParseConfig(ProcessEnv());
  if (!c.ok()) return c.status();
  if (c->role != Role::kWorker) return absl::InvalidArgumentError(not_a_worker);
  auto node = WorkerNode::Create(*c);
  if (!node.ok()) return node.status();
  WorkerNode& n = **node;
  if (auto s = n.Start(); !s.ok()) return s;
  KVWorker<float> kv(n.kv());
  absl::Status s = body(*c, n.tier(), kv, n.trains());
  // As RunWorker, without a stats line: the bench adds up the other processes'.
  if (s.ok()) {
    s = n.Finalize();
  } else {
    n.Abort(s.message());
  }
  return s;
}

int ClusterBenchMain(int argc, char** argv, const char* name, const char* exec_var,
                     const std::function<absl::Status(std::vector<std::string>)>& run) {
  if (const char* exe = std::getenv(exec_var); exe && argc == 1) {
    std::string path = exe;
    unsetenv(exec_var);
    char* args[] = {path.data(), nullptr};
    execv(path.c_str(), args);
    std::perror(absl::StrCat(name, ": exec ", path).c_str());
    return 127;
  }
  std::signal(SIGPIPE, SIG_IGN);
  // Ctrl-C stops the whole local cluster, not just this process.
  std::signal(SIGINT, [](int) { deploy::Cluster::RequestStop(); });
  std::signal(SIGTERM, [](int) { deploy::Cluster::RequestStop(); });
  absl::Status s = run(std::vector<std::string>(argv + 1, argv + argc));
  if (!s.ok()) {
    std::fprintf(stderr, "%s: %s\n", name, std::string(s.message()).c_str());
    return absl::IsInvalidArgument(s) ? 2 : 1;
  }
  return 0;
}

}  // namespace geops::bench
