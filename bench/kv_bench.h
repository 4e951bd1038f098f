// geops-bench-kv: the ps-lite test_benchmark workload on geops.
//
// Every worker owns `keys_per_server` x servers keys per value size and, per
// iteration, issues one request per key (all in flight at once, as
// test_benchmark does), then waits for all of them. Goodput counts each
// key's value once per request, in the direction of the operation (push:
// up, pull: down, pushpull: one value each way, counted once), so it is
// comparable with a one-directional ceiling such as ib_write_bw or iperf3.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bench/args.h"

namespace geops::bench {

enum class KvMode { kPush, kPull, kPushPull };
const char* KvModeName(KvMode m);

// What every worker of one run does; workers must agree on all of it.
struct KvWorkload {
  KvMode mode = KvMode::kPushPull;
  std::vector<uint64_t> value_bytes;   // one sweep step per entry
  int keys_per_server = 16;
  int64_t iters = 20;                  // per size, at most ...
  uint64_t max_bytes = 256ull << 20;   // ... and at most this many bytes per worker
};

absl::StatusOr<KvWorkload> ParseWorkload(Args& args);
// The same workload as options, for a worker started by the orchestrator.
std::string WorkloadArgs(const KvWorkload& w);
// Iterations of one size: the same on every worker, so that synchronous
// rounds always complete.
int64_t Iterations(const KvWorkload& w, uint64_t value_bytes, int num_servers);

// One worker, configured by the DMLC_* environment like any geops worker.
// Prints one `geops-bench-kv-worker` line per size.
absl::Status RunKvWorker(const KvWorkload& w);

// A whole cluster on this machine with the bench as its workers.
struct KvCluster {
  bool geomx = false;          // two tiers (deploy::Plan) instead of one
  int workers = 1;             // single tier: workers; geomx: per party
  int servers = 1;             // single tier: servers; geomx: per party
  int parties = 2;             // geomx
  int global_servers = 1;      // geomx
  bool rdma = false;           // DMLC_PS_VAN_TYPE=ibverbs for local tiers
  std::string host = "127.0.0.1";         // schedulers and servers
  std::string worker_host;                // workers (default: host)
  std::string log_dir;                    // default: a fresh /tmp dir
  double timeout_s = 600;
  std::string report_size = "1MiB";
};

absl::Status RunKvCluster(const KvCluster& c, const KvWorkload& w);

}  // namespace geops::bench
