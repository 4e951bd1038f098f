// The --local / --geomx orchestrator of geops-bench-kv.
//
// deploy::Cluster runs one executable for every process. Rather than
// changing the launcher, every process is started as this bench binary and
// the non-workers exec `geops` at once (GEOPS_BENCH_KV_EXEC, see kv_main):
// one Cluster then watches the whole topology, so any failure anywhere stops
// everything at once.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "bench/cluster_util.h"
#include "bench/kv_bench.h"
#include "bench/net_util.h"
#include "core/node/report.h"
#include "deploy/launcher.h"

namespace geops::bench {
namespace {

using deploy::ProcessSpec;
using Env = std::map<std::string, std::string>;

absl::StatusOr<std::vector<ProcessSpec>> SingleTier(const KvCluster& c) {
  auto port = deploy::FreePort(c.host);
  if (!port.ok()) return port.status();
  Env common = PassThroughEnv();
  common["DMLC_PS_ROOT_URI"] = c.host;
  common["DMLC_PS_ROOT_PORT"] = absl::StrCat(*port);
  common["DMLC_NUM_SERVER"] = absl::StrCat(c.servers);
  common["DMLC_NUM_WORKER"] = absl::StrCat(c.workers);
  // Worker 0 is the master worker and trains too (ps-lite has no master).
  common["DMLC_ENABLE_CENTRAL_WORKER"] = "1";
  if (c.rdma) common["DMLC_PS_VAN_TYPE"] = "ibverbs";
  auto with = [&](Env e) {
    for (const auto& [k, v] : common) e.try_emplace(k, v);
    return e;
  };
  std::vector<ProcessSpec> specs;
  specs.push_back({"scheduler", "p", with({{"DMLC_ROLE", "scheduler"}}), {}});
  for (int s = 0; s < c.servers; ++s) {
    specs.push_back({absl::StrCat("server", s), "p",
                     with({{"DMLC_ROLE", "server"}, {"DMLC_NODE_HOST", c.host}}), {}});
  }
  for (int w = 0; w < c.workers; ++w) {
    Env e = {{"DMLC_ROLE", "worker"}, {"DMLC_NODE_HOST", c.worker_host}};
    if (w == 0) e["DMLC_ROLE_MASTER_WORKER"] = "1";
    specs.push_back({absl::StrCat("worker", w), "p", with(e), {}});
  }
  return specs;
}

absl::StatusOr<std::vector<ProcessSpec>> GeoMX(const KvCluster& c) {
  deploy::Topology t;
  t.parties = c.parties;
  t.servers_per_party = c.servers;
  t.workers_per_party = c.workers;
  t.global_servers = c.global_servers;
  t.host = c.host;
  t.env = PassThroughEnv();
  // Local tiers only: the global tier is tcp by design.
  if (c.rdma) t.env["DMLC_PS_VAN_TYPE"] = "ibverbs";
  auto specs = deploy::Plan(t);
  if (!specs.ok()) return specs.status();
  for (auto& s : *specs) {
    if (s.env.count("DMLC_ROLE") && s.env["DMLC_ROLE"] == "worker") {
      s.env["DMLC_NODE_HOST"] = c.worker_host;
    }
  }
  return specs;
}

// One worker's line for one size.
struct Row {
  uint64_t value_bytes = 0;
  double gbps = 0, p50 = 0, p99 = 0, seconds = 0;
  uint64_t copied = 0;
  double faults_per_mib = 0;
  int64_t iters = 0;
  uint64_t registrations = 0, steady_registrations = 0;
};

// Memory registrations of the non-worker processes (their geops-stats
// lines, one per tier).
uint64_t ServerRegistrations(const std::string& stdout_text) {
  uint64_t total = 0;
  for (absl::string_view line : absl::StrSplit(stdout_text, '\n')) {
    if (auto t = report::TierStats::Parse(std::string_view(line.data(), line.size()))) {
      total += t->registrations;
    }
  }
  return total;
}

std::vector<Row> ParseRows(const std::string& stdout_text) {
  std::vector<Row> rows;
  for (absl::string_view line : absl::StrSplit(stdout_text, '\n')) {
    if (!absl::StartsWith(line, "geops-bench-kv-worker ") ||
        !absl::StrContains(line, "value_bytes=")) {
      continue;
    }
    std::map<std::string, std::string> kv;
    for (absl::string_view f : absl::StrSplit(line, ' ')) {
      auto eq = f.find('=');
      if (eq != absl::string_view::npos) {
        kv[std::string(f.substr(0, eq))] = std::string(f.substr(eq + 1));
      }
    }
    Row r;
    bool ok = absl::SimpleAtoi(kv["value_bytes"], &r.value_bytes) &&
              absl::SimpleAtod(kv["gbps"], &r.gbps) && absl::SimpleAtod(kv["p50_us"], &r.p50) &&
              absl::SimpleAtod(kv["p99_us"], &r.p99) &&
              absl::SimpleAtod(kv["seconds"], &r.seconds) &&
              absl::SimpleAtoi(kv["copied_bytes"], &r.copied) &&
              absl::SimpleAtod(kv["faults_per_mib"], &r.faults_per_mib) &&
              absl::SimpleAtoi(kv["iters"], &r.iters);
    // Absent from older workers' lines: 0.
    (void)absl::SimpleAtoi(kv["registrations"], &r.registrations);
    (void)absl::SimpleAtoi(kv["steady_registrations"], &r.steady_registrations);
    if (ok) rows.push_back(r);
  }
  return rows;
}

}  // namespace

absl::Status RunKvCluster(const KvCluster& c, const KvWorkload& w) {
  const std::string self = SelfPath();
  auto geops_path = GeopsNextToSelf();
  if (!geops_path.ok()) return geops_path.status();
  const std::string& geops = *geops_path;
  auto specs = c.geomx ? GeoMX(c) : SingleTier(c);
  if (!specs.ok()) return specs.status();
  int trainers = 0;
  for (auto& s : *specs) {
    bool worker = s.env.count("DMLC_ROLE") && s.env["DMLC_ROLE"] == "worker";
    if (worker) {
      s.env["GEOPS_BENCH_KV_ARGS"] = WorkloadArgs(w);
      bool master = s.env.count("DMLC_ROLE_MASTER_WORKER");
      trainers += !master || s.env["DMLC_ENABLE_CENTRAL_WORKER"] == "1";
    } else {
      s.env["GEOPS_BENCH_KV_EXEC"] = geops;
    }
  }

  std::string log_dir = c.log_dir;
  if (log_dir.empty()) {
    char tmpl[] = "/tmp/geops-bench-kv.XXXXXX";
    if (mkdtemp(tmpl) == nullptr) return absl::InternalError("mkdtemp failed");
    log_dir = tmpl;
  }
  std::printf("geops-bench-kv: %s topology, %zu processes (%d training workers), van=%s, "
              "mode=%s; logs in %s\n",
              c.geomx ? "geomx (two-tier)" : "single-tier", specs->size(), trainers,
              c.rdma ? "rdma" : "tcp", KvModeName(w.mode), log_dir.c_str());
  std::fflush(stdout);

  deploy::RunOptions ro;
  ro.binary = self;
  ro.log_dir = log_dir;
  ro.echo = true;
  ro.timeout = absl::Seconds(c.timeout_s);
  deploy::Cluster cluster(ro);
  if (auto s = cluster.Start(*specs); !s.ok()) return s;
  std::vector<deploy::ProcessResult> results = cluster.Wait();

  int failed = 0;
  uint64_t server_registrations = 0;
  std::map<uint64_t, std::vector<Row>> by_size;
  for (const auto& r : results) {
    if (r.exit_code != 0) {
      ++failed;
      std::printf("geops-bench-kv: %s %s; its log: %s\n  %s\n", r.name.c_str(),
                  r.signal ? absl::StrCat("was killed by signal ", r.signal).c_str()
                           : absl::StrCat("exited with status ", r.exit_code).c_str(),
                  r.stderr_path.c_str(), LastLine(r.stderr_path).c_str());
    }
    for (const Row& row : ParseRows(r.stdout_text)) by_size[row.value_bytes].push_back(row);
    server_registrations += ServerRegistrations(r.stdout_text);
  }

  // Workers measure at the same time (a barrier starts every size), so
  // their goodputs add up; latency is the worst worker's, the one a
  // synchronous training step waits for.
  uint64_t report_bytes = 0;
  if (auto b = ParseBytes(c.report_size); b.ok()) report_bytes = *b;
  std::vector<std::string> per_size;
  Row report;
  uint64_t copied = 0;
  bool complete = true;
  for (uint64_t size : w.value_bytes) {
    const auto& rows = by_size[size];
    complete &= static_cast<int>(rows.size()) == trainers;
    Row sum;
    sum.value_bytes = size;
    for (const Row& r : rows) {
      sum.gbps += r.gbps;
      sum.p50 = std::max(sum.p50, r.p50);
      sum.p99 = std::max(sum.p99, r.p99);
      sum.faults_per_mib = std::max(sum.faults_per_mib, r.faults_per_mib);
      copied = std::max(copied, r.copied);
      sum.iters = std::max(sum.iters, r.iters);
      sum.registrations += r.registrations;
      sum.steady_registrations += r.steady_registrations;
    }
    std::printf("value_bytes=%-7s %d/%d workers: %8.3f Gbit/s  per-op p50 %9.1f us  p99 %9.1f us\n",
                FormatBytes(size).c_str(), static_cast<int>(rows.size()), trainers, sum.gbps,
                sum.p50, sum.p99);
    per_size.push_back(absl::StrFormat("%d:%.4f:%.1f:%.1f", size, sum.gbps, sum.p50, sum.p99));
    if (size == report_bytes || report.value_bytes == 0 ||
        (report.value_bytes != report_bytes && size > report.value_bytes)) {
      report = sum;
    }
  }
  const int servers = c.geomx ? c.parties * c.servers : c.servers;
  const bool curve = std::getenv(c.rdma || !c.geomx ? "GEOPS_LOCAL_KEYFILE" : "GEOPS_GLOBAL_KEYFILE");
  std::printf("geops-bench-kv van=%s curve=%d topology=%s workers=%d servers=%d mode=%s "
              "keys_per_server=%d value_bytes=%llu goodput_gbps=%.4f p50_us=%.1f p99_us=%.1f "
              "copied_bytes=%llu faults_per_mib=%.2f rdma_registrations=%llu "
              "rdma_registrations_servers=%llu rdma_registrations_per_round=%.3f "
              "processes_failed=%d results=%s\n",
              c.rdma ? "rdma" : "tcp", curve ? 1 : 0, c.geomx ? "geomx" : "single", trainers,
              servers,
              KvModeName(w.mode), w.keys_per_server,
              static_cast<unsigned long long>(report.value_bytes), report.gbps, report.p50,
              report.p99, static_cast<unsigned long long>(copied), report.faults_per_mib,
              static_cast<unsigned long long>(report.registrations),
              static_cast<unsigned long long>(server_registrations),
              report.iters > 0 ? static_cast<double>(report.steady_registrations) / report.iters
                               : 0.0,
              failed,
              absl::StrJoin(per_size, ",").c_str());
  std::fflush(stdout);
  if (failed > 0) return absl::InternalError(absl::StrCat(failed, " processes failed"));
  if (!complete) return absl::DataLossError("some workers reported no result for some sizes");
  return absl::OkStatus();
}

}  // namespace geops::bench
