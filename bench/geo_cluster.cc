// The orchestrator of geops-bench-geo: starts every process (the bench
// binary for workers, `geops` for the rest, as geops-bench-kv does), then
// turns the workers' per-round lines into the CSV and the summary.
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/cluster_util.h"
#include "bench/geo_bench.h"
#include "bench/geo_models.h"
#include "bench/net_util.h"
#include "bench/percentiles.h"
#include "core/kv/sparse.h"
#include "deploy/launcher.h"

namespace geops::bench {
namespace {

using deploy::ProcessSpec;
using Env = std::map<std::string, std::string>;

// Party names as deploy::Plan gives them: central, A, B, ..., Z, A1, ...
std::string PartyName(int index) {
  if (index == 0) return "central";
  int p = index - 1;
  std::string name(1, static_cast<char>('A' + p % 26));
  if (p >= 26) name += absl::StrCat(p / 26);
  return name;
}

// The flat parameter server: one tier whose scheduler and servers are in
// the central party; every worker, wherever it is, is their client.
absl::StatusOr<std::vector<ProcessSpec>> Flat(const GeoCluster& c) {
  auto host_of = [&](int p) { return c.party_hosts.empty() ? "127.0.0.1" : c.party_hosts[p]; };
  auto port = deploy::FreePort(host_of(0));
  if (!port.ok()) return port.status();
  const int central = c.central_workers ? c.workers : 1;
  Env common = PassThroughEnv();
  common["DMLC_PS_ROOT_URI"] = host_of(0);
  common["DMLC_PS_ROOT_PORT"] = absl::StrCat(*port);
  common["DMLC_NUM_SERVER"] = absl::StrCat(c.global_servers);
  common["DMLC_NUM_WORKER"] = absl::StrCat(central + c.parties * c.workers);
  common["DMLC_ENABLE_CENTRAL_WORKER"] = c.central_workers ? "1" : "0";
  std::vector<ProcessSpec> specs;
  auto add = [&](std::string name, int party, Env e) {
    for (const auto& [k, v] : common) e.try_emplace(k, v);
    e["DMLC_NODE_HOST"] = host_of(party);
    e["GEOPS_PARTY"] = PartyName(party);
    specs.push_back({std::move(name), PartyName(party), std::move(e), {}});
  };
  add("central.scheduler", 0, {{"DMLC_ROLE", "scheduler"}});
  for (int s = 0; s < c.global_servers; ++s) {
    add(absl::StrCat("central.server", s), 0, {{"DMLC_ROLE", "server"}});
  }
  add("central.master_worker", 0, {{"DMLC_ROLE", "worker"}, {"DMLC_ROLE_MASTER_WORKER", "1"}});
  for (int w = 1; w < central; ++w) {
    add(absl::StrCat("central.worker", w), 0, {{"DMLC_ROLE", "worker"}});
  }
  for (int p = 1; p <= c.parties; ++p) {
    for (int w = 0; w < c.workers; ++w) {
      add(absl::StrCat(PartyName(p), ".worker", w), p, {{"DMLC_ROLE", "worker"}});
    }
  }
  return specs;
}

absl::StatusOr<std::vector<ProcessSpec>> Hier(const GeoCluster& c) {
  deploy::Topology t;
  t.parties = c.parties;
  t.servers_per_party = c.servers;
  t.workers_per_party = c.workers;
  t.global_servers = c.global_servers;
  t.central_training = c.central_workers;
  t.central_workers = c.central_workers ? c.workers - 1 : 0;
  t.party_hosts = c.party_hosts;
  t.env = PassThroughEnv();
  return deploy::Plan(t);
}

// One worker's measurements of one round.
struct RoundLine {
  int party = 0, round = 0;
  bool timed = false, wan = false;
  double seconds = 0, first = 0, any = 0;
  uint64_t lan = 0, up = 0, down = 0, msgs = 0, mismatches = 0;
};

std::vector<RoundLine> ParseRounds(const std::string& text) {
  std::vector<RoundLine> out;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!absl::ConsumePrefix(&line, "geo-round ")) continue;
    std::map<std::string, std::string> kv;
    for (absl::string_view f : absl::StrSplit(line, ' ')) {
      auto eq = f.find('=');
      if (eq != absl::string_view::npos) kv[std::string(f.substr(0, eq))] = std::string(f.substr(eq + 1));
    }
    RoundLine r;
    int timed = 0, wan = 0;
    if (absl::SimpleAtoi(kv["party"], &r.party) && absl::SimpleAtoi(kv["round"], &r.round) &&
        absl::SimpleAtoi(kv["timed"], &timed) && absl::SimpleAtoi(kv["wan"], &wan) &&
        absl::SimpleAtod(kv["seconds"], &r.seconds) && absl::SimpleAtod(kv["first_key_s"], &r.first) &&
        absl::SimpleAtod(kv["first_result_s"], &r.any) &&
        absl::SimpleAtoi(kv["lan_bytes"], &r.lan) &&
        absl::SimpleAtoi(kv["wan_up"], &r.up) && absl::SimpleAtoi(kv["wan_down"], &r.down) &&
        absl::SimpleAtoi(kv["wan_msgs"], &r.msgs) &&
        absl::SimpleAtoi(kv["mismatches"], &r.mismatches)) {
      r.timed = timed, r.wan = wan;
      out.push_back(r);
    }
  }
  return out;
}

// A round across the whole cluster.
struct Round {
  int workers = 0;
  bool timed = false;
  double seconds = 0;  // the slowest worker's: a synchronous step waits for it
  double first = 0;    // ... and when the slowest got key 0 (the first layer)
  double any = 0;      // ... and its first result of all
  uint64_t lan = 0, wan = 0, wan_msgs = 0, mismatches = 0;
  std::map<int, std::pair<uint64_t, uint64_t>> party_wan;  // up, down
  double lower_bound = NAN;
};

// The least time a round can take on these links: the busiest direction
// of the slowest party link at its configured rate, plus the one WAN round
// trip a push-pull needs (all keys are in flight at once).
double LowerBound(const GeoCluster& c, const Round& r) {
  double transfer = 0, rtt = 0;
  for (const auto& [party, bytes] : r.party_wan) {
    auto up = c.up_bps.find(party), down = c.down_bps.find(party), t = c.rtt_s.find(party);
    if (up == c.up_bps.end() || down == c.down_bps.end() || t == c.rtt_s.end() ||
        up->second <= 0 || down->second <= 0) {
      return NAN;
    }
    transfer = std::max({transfer, bytes.first * 8.0 / up->second, bytes.second * 8.0 / down->second});
    rtt = std::max(rtt, t->second);
  }
  return r.party_wan.empty() ? NAN : transfer + rtt;
}

}  // namespace

absl::StatusOr<double> ParseRate(const std::string& text) {
  static const std::pair<const char*, double> kUnits[] = {
      {"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}, {"bit", 1}};
  for (const auto& [unit, scale] : kUnits) {
    absl::string_view v = text;
    double x = 0;
    if (absl::ConsumeSuffix(&v, unit) && absl::SimpleAtod(v, &x) && x > 0) return x * scale;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("rate \"", text, "\": expected a tc rate such as 100mbit, 1gbit or 500kbit"));
}

absl::Status ReadLabLinks(const std::string& path, const std::vector<std::string>& names,
                          GeoCluster& c) {
  std::ifstream f(path);
  if (!f) return absl::NotFoundError(absl::StrCat("cannot read the lab's links from ", path));
  auto index = [&](absl::string_view name) {
    auto it = std::find(names.begin(), names.end(), name);
    return it == names.end() ? -1 : static_cast<int>(it - names.begin());
  };
  std::string line;
  while (std::getline(f, line)) {
    absl::string_view l = line;
    if (!absl::ConsumePrefix(&l, "lab-link ")) continue;
    std::vector<std::string> fields = absl::StrSplit(l, ' ');
    std::vector<std::string> ends = absl::StrSplit(fields[0], "->");
    if (ends.size() != 2) continue;
    int from = index(ends[0]), to = index(ends[1]);
    std::map<std::string, std::string> kv;
    for (size_t i = 1; i < fields.size(); ++i) {
      auto eq = fields[i].find('=');
      if (eq != std::string::npos) kv[fields[i].substr(0, eq)] = fields[i].substr(eq + 1);
    }
    auto rate = ParseRate(kv["configured_rate"]);
    double rtt_ms = 0;
    if (from < 0 || to < 0 || !rate.ok() || !absl::SimpleAtod(kv["configured_rtt_ms"], &rtt_ms)) {
      continue;
    }
    // Only links to and from the central party carry geops's WAN traffic.
    if (to == 0 && from > 0) c.up_bps[from] = *rate, c.rtt_s[from] = rtt_ms / 1e3;
    if (from == 0 && to > 0) c.down_bps[to] = *rate;
  }
  return absl::OkStatus();
}

absl::Status RunGeoCluster(const GeoCluster& c, const GeoWorkload& w) {
  auto model = LookupModel(w.model, w.scale);
  if (!model.ok()) return model.status();
  if (!c.party_hosts.empty() && static_cast<int>(c.party_hosts.size()) != c.parties + 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%d party addresses for %d parties and the central one", c.party_hosts.size(), c.parties));
  }
  auto geops = GeopsNextToSelf();
  if (!geops.ok()) return geops.status();
  const bool flat = w.mode == GeoMode::kFlat;
  auto specs = flat ? Flat(c) : Hier(c);
  if (!specs.ok()) return specs.status();
  int trainers = 0;
  for (auto& s : *specs) {
    bool worker = s.env.count("DMLC_ROLE") && s.env["DMLC_ROLE"] == "worker";
    if (!worker) {
      s.env["GEOPS_BENCH_GEO_EXEC"] = *geops;
      continue;
    }
    GeoWorkload mine = w;
    mine.party = 0;
    for (int p = 0; p <= c.parties; ++p) {
      if (s.tier == PartyName(p)) mine.party = p;
    }
    s.env["GEOPS_BENCH_GEO_ARGS"] = GeoWorkloadArgs(mine);
    trainers += mine.party != 0 || c.central_workers;
  }

  std::string log_dir = c.log_dir;
  if (!log_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(log_dir, ec);
    if (ec) {
      return absl::InvalidArgumentError(
          absl::StrCat("--log-dir ", log_dir, ": cannot create it: ", ec.message()));
    }
  }
  if (log_dir.empty()) {
    char tmpl[] = "/tmp/geops-bench-geo.XXXXXX";
    if (mkdtemp(tmpl) == nullptr) return absl::InternalError("mkdtemp failed");
    log_dir = tmpl;
  }
  std::printf("geops-bench-geo: %s, %s (%zu tensors, %s), %d parties x %d workers%s, %zu "
              "processes; logs in %s\n",
              flat ? "flat (one tier, servers in the central party)"
                   : "hier (party servers aggregate, only they cross the WAN)",
              model->name.c_str(), model->elems.size(), FormatBytes(model->bytes()).c_str(),
              c.parties, c.workers, c.central_workers ? " (+ central workers)" : "",
              specs->size(), log_dir.c_str());
  std::fflush(stdout);

  deploy::RunOptions ro;
  ro.binary = SelfPath();
  ro.log_dir = log_dir;
  ro.echo = true;
  ro.echo_prefix = "geo-progress ";
  ro.timeout = absl::Seconds(c.timeout_s);
  deploy::Cluster cluster(ro);
  if (auto s = cluster.Start(*specs); !s.ok()) return s;
  std::vector<deploy::ProcessResult> results = cluster.Wait();

  int failed = 0;
  std::map<int, Round> rounds;
  for (const auto& r : results) {
    if (r.exit_code != 0) {
      ++failed;
      std::printf("geops-bench-geo: %s %s; its log: %s\n  %s\n", r.name.c_str(),
                  r.signal ? absl::StrCat("was killed by signal ", r.signal).c_str()
                           : absl::StrCat("exited with status ", r.exit_code).c_str(),
                  r.stderr_path.c_str(), LastLine(r.stderr_path).c_str());
    }
    for (const RoundLine& l : ParseRounds(r.stdout_text)) {
      Round& R = rounds[l.round];
      ++R.workers;
      R.timed = l.timed;
      R.seconds = std::max(R.seconds, l.seconds);
      R.first = std::max(R.first, l.first);
      R.any = std::max(R.any, l.any);
      R.lan += l.lan;
      R.mismatches += l.mismatches;
      if (l.wan) {
        R.wan += l.up + l.down;
        R.wan_msgs += l.msgs;
        R.party_wan[l.party].first += l.up;
        R.party_wan[l.party].second += l.down;
      }
    }
  }

  // Per-round CSV, appended to, so runs of several settings share a file.
  FILE* csv = nullptr;
  if (!c.csv.empty()) {
    struct stat st{};
    const bool fresh = stat(c.csv.c_str(), &st) != 0 || st.st_size == 0;
    csv = std::fopen(c.csv.c_str(), "a");
    if (csv == nullptr) return absl::InternalError(absl::StrCat("cannot write ", c.csv));
    if (fresh) {
      std::fputs("label,mode,model,model_bytes,parties,workers,round,timed,seconds,wan_bytes,"
                 "lan_bytes,wan_msgs,lower_bound_s,mismatches,first_key_s,first_result_s\n", csv);
    }
  }
  std::vector<double> times, bounds, wan, lan, msgs, firsts, anys;
  bool complete = !rounds.empty() && static_cast<int>(rounds.size()) == w.warmup + w.rounds;
  uint64_t mismatches = 0;
  for (auto& [n, R] : rounds) {
    R.lower_bound = LowerBound(c, R);
    complete &= R.workers == trainers;
    mismatches += R.mismatches;
    if (csv) {
      std::fprintf(csv, "%s,%s,%s,%lld,%d,%d,%d,%d,%.6f,%llu,%llu,%llu,%.6f,%llu,%.6f,%.6f\n",
                   c.label.c_str(),
                   flat ? "flat" : "hier", model->name.c_str(),
                   static_cast<long long>(model->bytes()), c.parties, c.workers, n, R.timed ? 1 : 0,
                   R.seconds, static_cast<unsigned long long>(R.wan),
                   static_cast<unsigned long long>(R.lan),
                   static_cast<unsigned long long>(R.wan_msgs), R.lower_bound,
                   static_cast<unsigned long long>(R.mismatches), R.first, R.any);
    }
    if (!R.timed) continue;
    times.push_back(R.seconds);
    firsts.push_back(R.first);
    anys.push_back(R.any);
    wan.push_back(static_cast<double>(R.wan));
    lan.push_back(static_cast<double>(R.lan));
    msgs.push_back(static_cast<double>(R.wan_msgs));
    if (!std::isnan(R.lower_bound)) bounds.push_back(R.lower_bound);
  }
  if (csv) std::fclose(csv);

  Percentiles t = Summarize(times), b = Summarize(bounds), lb = Summarize(lan),
              mb = Summarize(msgs), fk = Summarize(firsts), fr = Summarize(anys);
  // The mean, not the median: with HFA most rounds cross nothing.
  double wan_mean = 0;
  for (double v : wan) wan_mean += v / static_cast<double>(wan.size());
  // What the bytes should be: each party link carries the model up and
  // down once (hier), or once per worker of that party (flat). The WAN
  // policies (hier only: a flat worker has no WAN tier of its own) change
  // what one copy of the model costs: 16-bit values halve it; top-k sends
  // a container per key (header, 4-byte indices and values, or all values
  // of a key below the size bound); HFA crosses every K2-th round only.
  const GeoCluster::Policy& pol = c.policy;
  const bool half = !flat && pol.wan_dtype != "float32";
  const double value_bytes = half ? 2 : 4;
  double model_bytes = 0;
  for (int64_t e : model->elems) {
    if (flat || pol.topk == 0) {
      model_bytes += static_cast<double>(e) * value_bytes;
    } else if (e >= std::max<int64_t>(pol.topk_min_elems, 1)) {
      const uint64_t k = TopKCount(static_cast<uint64_t>(e), pol.topk);
      model_bytes += kSparseHeaderBytes +
                     static_cast<double>(k) * (value_bytes + (k < static_cast<uint64_t>(e) ? 4 : 0));
    } else {
      model_bytes += kSparseHeaderBytes + static_cast<double>(e) * value_bytes;
    }
  }
  if (!flat && pol.hfa_k2 > 0) model_bytes /= pol.hfa_k2;
  const double expected_wan = 2.0 * c.parties * (flat ? c.workers : 1) * model_bytes;
  const double lower = bounds.empty() ? NAN : b.p50;
  std::printf("geops-bench-geo mode=%s model=%s tensors=%zu model_bytes=%lld parties=%d "
              "workers=%d servers=%d global_servers=%d central_workers=%d rounds=%zu "
              "round_p50_s=%.6f round_p99_s=%.6f first_key_p50_s=%.6f first_result_p50_s=%.6f "
              "wan_bytes_per_round=%.0f "
              "wan_bytes_expected=%.0f wan_ratio=%.4f wan_msgs_per_round=%.0f lan_bytes_per_round=%.0f "
              "lower_bound_s=%.6f "
              "ratio_to_bound=%.3f wan_dtype=%s policy=%s checked=%s mismatches=%llu "
              "processes_failed=%d label=%s\n",
              flat ? "flat" : "hier", model->name.c_str(), model->elems.size(),
              static_cast<long long>(model->bytes()), c.parties, c.workers, flat ? 0 : c.servers,
              c.global_servers, c.central_workers ? 1 : 0, times.size(), t.p50, t.p99, fk.p50, fr.p50,
              wan_mean, expected_wan, wan_mean / expected_wan, mb.p50, lb.p50, lower, t.p50 / lower,
              half ? pol.wan_dtype.c_str() : "float32", flat ? "float32" : pol.Describe().c_str(),
              flat || pol.exact() ? "exact" : "sizes",
              static_cast<unsigned long long>(mismatches), failed,
              c.label.empty() ? "-" : c.label.c_str());
  std::fflush(stdout);
  if (failed > 0) return absl::InternalError(absl::StrCat(failed, " processes failed"));
  if (mismatches > 0) return absl::DataLossError("some rounds were not bit-exact");
  if (!complete) return absl::DataLossError("some workers reported no result for some rounds");
  return absl::OkStatus();
}

}  // namespace geops::bench
