// geops-bench-kv: the ps-lite test_benchmark workload (push / pull /
// pushpull over many keys) on a geops cluster. See kUsage.
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "bench/args.h"
#include "bench/cluster_util.h"
#include "bench/kv_bench.h"
#include "deploy/launcher.h"

namespace {

const char kUsage[] = R"(usage:
  geops-bench-kv --local [--workers N] [--servers M] [workload] [cluster options]
  geops-bench-kv --geomx [--parties P] [--workers N] [--servers M] [workload] [...]
  geops-bench-kv [workload]        (as a worker of a cluster you started:
                                    DMLC_ROLE=worker and the DMLC_* environment)

Every worker owns keys-per-server x servers keys per value size; each
iteration it sends one request per key, all in flight, and waits for them
(ps-lite tests/test_benchmark). Goodput counts each key's value once per
request; latency is per request, submit to completion. With --local (one
tier: a scheduler, M geops servers, N bench workers, worker 0 the master
worker) or --geomx (deploy::Plan's two-tier topology with bench workers) the
whole cluster runs on this machine and the run ends with one line:
  geops-bench-kv van=.. topology=.. workers=.. servers=.. mode=.. keys_per_server=..
    value_bytes=.. goodput_gbps=.. p50_us=.. p99_us=.. copied_bytes=.. faults_per_mib=..
    rdma_registrations=.. rdma_registrations_servers=.. rdma_registrations_per_round=..
    processes_failed=.. results=VALUE_BYTES:GBPS:P50:P99,...
(goodput summed over workers, latency of the worst worker; registrations:
the workers' memory registrations in all at the reported size, the other
processes' in all, and the workers' per timed round after warm-up).

workload (every worker must be given the same)
  --mode push|pull|pushpull   (default pushpull)
  --value-bytes LIST          bytes per key (default 4K,16K,64K,256K,1M,4M)
  --keys-per-server K         (default 16)
  --iters N                   timed iterations per size, at most (default 20)
  --max-bytes B               ... and at most B bytes per worker per size (256MiB)
cluster options
  --workers N                 workers (per party with --geomx; default 1)
  --servers M                 servers (per party with --geomx; default 1)
  --parties P                 --geomx: training parties (default 2)
  --global-servers G          --geomx: global servers (default 1)
  --van tcp|rdma              local tiers (default: DMLC_PS_VAN_TYPE=ibverbs or
                              DMLC_ENABLE_RDMA=1 select rdma, else tcp)
  --host IP                   schedulers and servers listen here (127.0.0.1)
  --worker-host IP            workers listen here (default: --host)
  --report-size B             the value size named in the summary (1MiB)
  --log-dir DIR               per-process stderr (default: a new /tmp dir)
  --timeout S                 stop everything after S seconds (600)
)";

bool RdmaFromEnv() {
  auto lower = [](const char* v) { return absl::AsciiStrToLower(v ? v : ""); };
  std::string van = lower(std::getenv("DMLC_PS_VAN_TYPE"));
  std::string enable = lower(std::getenv("DMLC_ENABLE_RDMA"));
  return van == "ibverbs" || enable == "ibverbs" || enable == "1" || enable == "true";
}

absl::Status Main(std::vector<std::string> argv) {
  using namespace geops::bench;
  // A worker started by the orchestrator gets no argv from the launcher.
  if (argv.empty()) {
    if (const char* env = std::getenv("GEOPS_BENCH_KV_ARGS")) argv = SplitWords(env);
  }
  auto args = Args::Parse(argv, {"help", "local", "geomx"});
  if (!args.ok()) return args.status();
  if (args->Has("help")) {
    std::fputs(kUsage, stdout);
    return absl::OkStatus();
  }
  auto w = ParseWorkload(*args);
  if (!w.ok()) return w.status();
  const bool local = args->Has("local"), geomx = args->Has("geomx");
  if (!local && !geomx) {
    if (auto s = args->CheckAllUsed(); !s.ok()) return s;
    return RunKvWorker(*w);
  }
  if (local && geomx) return absl::InvalidArgumentError("--local and --geomx exclude each other");
  KvCluster c;
  c.geomx = geomx;
  auto workers = args->Int("workers", c.workers, 1, 256);
  auto servers = args->Int("servers", c.servers, 1, 64);
  auto parties = args->Int("parties", c.parties, 1, 26);
  auto gservers = args->Int("global-servers", c.global_servers, 1, 64);
  auto timeout = args->Seconds("timeout", c.timeout_s);
  for (auto* s : {&workers.status(), &servers.status(), &parties.status(), &gservers.status(),
                  &timeout.status()}) {
    if (!s->ok()) return *s;
  }
  c.workers = static_cast<int>(*workers);
  c.servers = static_cast<int>(*servers);
  c.parties = static_cast<int>(*parties);
  c.global_servers = static_cast<int>(*gservers);
  c.timeout_s = *timeout;
  std::string van = args->Str("van", RdmaFromEnv() ? "rdma" : "tcp");
  if (van != "tcp" && van != "rdma") {
    return absl::InvalidArgumentError("--van \"" + van + "\": expected tcp or rdma");
  }
  c.rdma = van == "rdma";
  c.host = args->Str("host", c.host);
  c.worker_host = args->Str("worker-host", c.host);
  c.report_size = args->Str("report-size", c.report_size);
  c.log_dir = args->Str("log-dir", "");
  if (auto s = args->CheckAllUsed(); !s.ok()) return s;
  return RunKvCluster(c, *w);
}

}  // namespace

int main(int argc, char** argv) {
  // The orchestrator starts every process of the cluster as this binary;
  // the ones that are not bench workers become `geops` at once.
  return geops::bench::ClusterBenchMain(argc, argv, "geops-bench-kv", "GEOPS_BENCH_KV_EXEC", Main);
}
