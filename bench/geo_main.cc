// geops-bench-geo: synchronous rounds of a model across emulated (or real)
// data centres. See kUsage and geo_bench.h.
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bench/args.h"
#include "bench/cluster_util.h"
#include "bench/geo_bench.h"
#include "bench/geo_models.h"
#include "deploy/launcher.h"

namespace {

const char kUsage[] = R"(usage: geops-bench-geo [options]

Runs a whole geops cluster on this host: a central party (global scheduler,
global servers, master worker) and P training parties of W workers, every
worker pushing and pulling a model-shaped key set each synchronous round.
Inside the WAN lab (deploy/lab/lab.sh ... -- geops-bench-geo ...) every
party uses its own lab address, so traffic between parties crosses the
emulated links, and the lab's configured rates and RTTs give the lower bound.

  --mode hier|flat        hier: geops's two tiers, only party servers cross the
                          WAN; flat: one tier, servers in the central party,
                          every worker their client over the WAN (default hier)
  --model NAME            resnet50, bert-base, or sizes:LIST such as
                          sizes:1000x1K,4MiB (default resnet50)
  --scale N               divide every tensor by N (CI: resnet50 --scale 64)
  --rounds R              timed rounds (default 10), after --warmup K (2)
  --request per-key|one   one push-pull per tensor in backward order, all in
                          flight (default), or one request for the model
  --parties P             training parties (default: the lab's, else 2)
  --workers W             workers per party (default 2)
  --servers S             servers per party, hier (default 1)
  --global-servers G      global servers (flat: central servers) (default 1)
  --central-workers       the central party trains too, with W workers
  --party-hosts A,B,...   one address per party, central first (default: the
                          lab's first address of each party, else 127.0.0.1)
  --wan-rate R            rate of every party link for the lower bound, tc
                          units (default: the lab's configured rates)
  --wan-rtt-ms X          RTT of every party link for the lower bound
  --wan-dtype T           float32, fp16 or bf16 on the WAN (GEOPS_WAN_DTYPE)
  --topk D                top-k with error feedback both ways, D of each key
                          (0.01 or 1%; GEOPS_WAN_TOPK); keys below --topk-min N
                          elements (MXNET_KVSTORE_SIZE_LOWER_BOUND, 200000) go
                          dense
  --sync sync|mixed       mixed: MixedSync (GEOPS_WAN_SYNC), --staleness S
  --hfa K2                HFA: every K2-th round crosses the WAN, the others
                          are averaged in the party (MXNET_KVSTORE_USE_HFA=1,
                          MXNET_KVSTORE_HFA_K2); each bench round stands for
                          one party-level aggregation
  --csv FILE              append one row per round (and a header if new)
  --label TEXT            a tag for the CSV rows and summary (e.g. 100mbit-40ms)
  --log-dir DIR           per-process stderr (default: a new /tmp dir)
  --timeout S             stop everything after S seconds (default 900)

Output: geo-progress lines per round while it runs, then one line:
  geops-bench-geo mode=.. model=.. tensors=.. model_bytes=.. parties=.. workers=..
    servers=.. global_servers=.. central_workers=.. rounds=.. round_p50_s=..
    round_p99_s=.. first_key_p50_s=.. first_result_p50_s=..
    wan_bytes_per_round=.. wan_bytes_expected=.. wan_ratio=.. wan_msgs_per_round=..
    lan_bytes_per_round=.. lower_bound_s=.. ratio_to_bound=.. wan_dtype=..
    mismatches=.. processes_failed=.. label=..
first_key_p50_s: when the first tensor's result (key 0, the first layer,
which the next forward pass needs first) arrived; ENABLE_P3=1 brings it
forward; first_result_p50_s: when the first result of any tensor arrived
(how much of a round's download overlaps its upload). WAN and LAN bytes are medians over the timed rounds of what the transports
counted (message headers and payload; not TCP/IP headers). hier: each
party's servers report their global tier's counters between rounds; flat:
each worker outside the central party counts its own. wan_bytes_expected is
2 x parties x model bytes (hier; half that with GEOPS_WAN_DTYPE=fp16 or
bf16) or 2 x parties x W x model bytes (flat).
lower_bound_s: the busiest direction of the slowest party link at its rate,
plus one RTT. Every round is checked bit for bit; exit status 0 only when
all of them were exact and every process succeeded.
)";

absl::Status Main(std::vector<std::string> argv) {
  using namespace geops::bench;
  // A worker started by the orchestrator gets its workload from the environment.
  if (const char* env = std::getenv("GEOPS_BENCH_GEO_ARGS"); env && argv.empty()) {
    auto args = Args::Parse(SplitWords(env), {});
    if (!args.ok()) return args.status();
    auto w = ParseGeoWorkload(*args);
    if (!w.ok()) return w.status();
    if (auto s = args->CheckAllUsed(); !s.ok()) return s;
    return RunGeoWorker(*w);
  }
  auto args = Args::Parse(argv, {"help", "central-workers"});
  if (!args.ok()) return args.status();
  if (args->Has("help")) {
    std::fputs(kUsage, stdout);
    return absl::OkStatus();
  }
  auto w = ParseGeoWorkload(*args);
  if (!w.ok()) return w.status();

  GeoCluster c;
  // Inside the lab: its parties, addresses and links.
  const char* lab_parties = std::getenv("LAB_PARTIES");
  int lab = 0;
  if (lab_parties && (!absl::SimpleAtoi(lab_parties, &lab) || lab < 2)) {
    return absl::InvalidArgumentError(
        absl::StrCat("LAB_PARTIES=\"", lab_parties, "\": expected the lab's party count (>= 2)"));
  }
  auto parties = args->Int("parties", lab > 0 ? lab - 1 : c.parties, 1, 26);
  auto workers = args->Int("workers", c.workers, 1, 64);
  auto servers = args->Int("servers", c.servers, 1, 16);
  auto gservers = args->Int("global-servers", c.global_servers, 1, 16);
  auto timeout = args->Seconds("timeout", c.timeout_s);
  for (const absl::Status* s : {&parties.status(), &workers.status(), &servers.status(),
                                &gservers.status(), &timeout.status()}) {
    if (!s->ok()) return *s;
  }
  c.parties = static_cast<int>(*parties);
  c.workers = static_cast<int>(*workers);
  c.servers = static_cast<int>(*servers);
  c.global_servers = static_cast<int>(*gservers);
  c.timeout_s = *timeout;
  c.central_workers = args->Has("central-workers");
  auto policy = ParseGeoPolicy(*args);
  if (!policy.ok()) return policy.status();
  c.policy = *policy;
  c.csv = args->Str("csv", "");
  c.label = args->Str("label", "");
  c.log_dir = args->Str("log-dir", "");
  if (c.label.find_first_of(", ") != std::string::npos) {
    return absl::InvalidArgumentError("--label \"" + c.label + "\": no commas or blanks (CSV)");
  }
  std::string hosts = args->Str("party-hosts", "");
  if (!hosts.empty()) {
    c.party_hosts = absl::StrSplit(hosts, ',');
  } else if (lab > 0) {
    if (c.parties + 1 > lab) {
      return absl::InvalidArgumentError(absl::StrCat("--parties ", c.parties, ": the lab has ",
                                                     lab - 1, " parties besides the central one"));
    }
    std::vector<std::string> names;
    for (int p = 0; p < lab; ++p) {
      const std::string var = absl::StrCat("LAB_PARTY_", p, "_ADDRS");
      const char* addrs = std::getenv(var.c_str());
      const char* name = std::getenv(absl::StrCat("LAB_PARTY_", p, "_NAME").c_str());
      if (addrs == nullptr || *addrs == 0) {
        return absl::InvalidArgumentError(absl::StrCat(var, " is not set: source the lab's lab.env"));
      }
      if (p <= c.parties) c.party_hosts.push_back(std::vector<std::string>(absl::StrSplit(addrs, ' '))[0]);
      names.push_back(name ? name : "");
    }
    const char* dir = std::getenv("LAB_STATE_DIR");
    if (auto s = ReadLabLinks(absl::StrCat(dir ? dir : "/run/geops-lab", "/links.txt"), names, c);
        !s.ok()) {
      std::fprintf(stderr, "geops-bench-geo: %s; no lower bound\n", std::string(s.message()).c_str());
    }
  }
  std::string rate = args->Str("wan-rate", "");
  if (!rate.empty()) {
    auto bps = ParseRate(rate);
    if (!bps.ok()) return absl::InvalidArgumentError(absl::StrCat("--wan-rate: ", bps.status().message()));
    for (int p = 1; p <= c.parties; ++p) c.up_bps[p] = c.down_bps[p] = *bps;
  }
  std::string rtt = args->Str("wan-rtt-ms", "");
  if (!rtt.empty()) {
    double ms = 0;
    if (!absl::SimpleAtod(rtt, &ms) || ms < 0) {
      return absl::InvalidArgumentError("--wan-rtt-ms \"" + rtt + "\": expected milliseconds >= 0");
    }
    for (int p = 1; p <= c.parties; ++p) c.rtt_s[p] = ms / 1e3;
  }
  if (auto s = args->CheckAllUsed(); !s.ok()) return s;
  return RunGeoCluster(c, *w);
}

}  // namespace

namespace geops::bench {

absl::StatusOr<GeoWorkload> ParseGeoWorkload(Args& args) {
  GeoWorkload w;
  std::string mode = args.Str("mode", "hier");
  if (mode == "hier") w.mode = GeoMode::kHier;
  else if (mode == "flat") w.mode = GeoMode::kFlat;
  else return absl::InvalidArgumentError("--mode \"" + mode + "\": expected hier or flat");
  w.model = args.Str("model", w.model);
  auto scale = args.Int("scale", w.scale, 1, 1 << 20);
  auto rounds = args.Int("rounds", w.rounds, 1, 1000000);
  auto warmup = args.Int("warmup", w.warmup, 0, 1000000);
  auto party = args.Int("party", 0, 0, 1000);
  for (const absl::Status* s : {&scale.status(), &rounds.status(), &warmup.status(), &party.status()}) {
    if (!s->ok()) return *s;
  }
  w.scale = *scale;
  w.rounds = static_cast<int>(*rounds);
  w.warmup = static_cast<int>(*warmup);
  w.party = static_cast<int>(*party);
  std::string request = args.Str("request", "per-key");
  if (request != "per-key" && request != "one") {
    return absl::InvalidArgumentError("--request \"" + request + "\": expected per-key or one");
  }
  w.per_key = request == "per-key";
  if (auto m = LookupModel(w.model, w.scale); !m.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--model: ", m.status().message()));
  }
  return w;
}

absl::StatusOr<GeoCluster::Policy> ParseGeoPolicy(Args& args) {
  GeoCluster::Policy p;
  auto env = [](const char* name, const char* fallback) {
    const char* v = std::getenv(name);
    return std::string(v && *v ? v : fallback);
  };
  auto put = [](const char* name, const std::string& v) {
    if (!v.empty()) setenv(name, v.c_str(), 1);
  };
  std::string dtype = absl::AsciiStrToLower(args.Str("wan-dtype", env("GEOPS_WAN_DTYPE", "float32")));
  if (dtype == "float16") dtype = "fp16";
  if (dtype == "bfloat16") dtype = "bf16";
  if (dtype == "fp32") dtype = "float32";
  if (dtype != "float32" && dtype != "fp16" && dtype != "bf16") {
    return absl::InvalidArgumentError("--wan-dtype "" + dtype + "": expected float32, fp16 or bf16");
  }
  p.wan_dtype = dtype;
  put("GEOPS_WAN_DTYPE", dtype);
  std::string topk = args.Str("topk", env("GEOPS_WAN_TOPK", ""));
  if (!topk.empty()) {
    absl::string_view t = topk;
    const bool percent = absl::ConsumeSuffix(&t, "%");
    if (!absl::SimpleAtod(t, &p.topk) || !(p.topk > 0) || p.topk / (percent ? 100 : 1) > 1) {
      return absl::InvalidArgumentError("--topk "" + topk + "": expected a fraction such as 0.01 or 1%");
    }
    if (percent) p.topk /= 100;
    put("GEOPS_WAN_TOPK", topk);
  }
  auto min = args.Int("topk-min", std::stoll(env("MXNET_KVSTORE_SIZE_LOWER_BOUND", "200000")), 0,
                      INT32_MAX);
  if (!min.ok()) return min.status();
  p.topk_min_elems = *min;
  put("MXNET_KVSTORE_SIZE_LOWER_BOUND", absl::StrCat(*min));
  std::string sync = args.Str("sync", env("GEOPS_WAN_SYNC", "sync"));
  if (sync != "sync" && sync != "mixed") {
    return absl::InvalidArgumentError("--sync "" + sync + "": expected sync or mixed");
  }
  p.mixed = sync == "mixed";
  put("GEOPS_WAN_SYNC", sync);
  std::string stale = args.Str("staleness", env("GEOPS_WAN_STALENESS", ""));
  put("GEOPS_WAN_STALENESS", stale);
  const bool hfa_env = env("MXNET_KVSTORE_USE_HFA", "0") == "1";
  auto k2 = args.Int("hfa", hfa_env ? std::stoll(env("MXNET_KVSTORE_HFA_K2", "10")) : 0, 0, 1000000);
  if (!k2.ok()) return k2.status();
  p.hfa_k2 = static_cast<int>(*k2);
  if (p.hfa_k2 > 0) {
    put("MXNET_KVSTORE_USE_HFA", "1");
    put("MXNET_KVSTORE_HFA_K2", absl::StrCat(p.hfa_k2));
  }
  return p;
}

std::string GeoCluster::Policy::Describe() const {
  std::string out = wan_dtype;
  if (topk > 0) out += absl::StrFormat(",topk=%g", topk);
  if (mixed) out += ",mixed";
  if (hfa_k2 > 0) out += absl::StrFormat(",hfa_k2=%d", hfa_k2);
  return out;
}

bool Exact(const Config& c) {
  return !(c.wan_topk > 0 && c.wan_topk < 1) && !c.wan_mixed && !c.hfa;
}

std::string GeoWorkloadArgs(const GeoWorkload& w) {
  return absl::StrCat("--mode ", w.mode == GeoMode::kFlat ? "flat" : "hier", " --model ", w.model,
                      " --scale ", w.scale, " --rounds ", w.rounds, " --warmup ", w.warmup,
                      " --request ", w.per_key ? "per-key" : "one", " --party ", w.party);
}

}  // namespace geops::bench

int main(int argc, char** argv) {
  // The orchestrator starts every process of the cluster as this binary;
  // the ones that are not bench workers become `geops` at once.
  return geops::bench::ClusterBenchMain(argc, argv, "geops-bench-geo", "GEOPS_BENCH_GEO_EXEC", Main);
}
