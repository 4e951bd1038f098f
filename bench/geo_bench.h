// geops-bench-geo: synchronous rounds of a model-shaped key set across
// parties joined by WAN links, in geops's two-tier layout (`hier`: only the
// parties' servers cross the WAN) or as the flat parameter server a GeoMX
// user compares with (`flat`: every worker is a client of servers in the
// central party). Every round is checked bit for bit; the bytes per round
// come from the transports' counters, never from a formula.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bench/args.h"
#include "core/base/config.h"

namespace geops::bench {

enum class GeoMode { kHier, kFlat };

// What every worker of one run does; all of them get the same.
struct GeoWorkload {
  GeoMode mode = GeoMode::kHier;
  std::string model = "resnet50";
  int64_t scale = 1;
  int rounds = 10;        // timed
  int warmup = 2;         // untimed, after the initial pull
  // per-key: one push-pull per tensor, all in flight, in backward order
  // (last layer first), as a framework hooks them; one: one request.
  bool per_key = true;
  int party = 0;          // this worker's party, 0: the central one
};

absl::StatusOr<GeoWorkload> ParseGeoWorkload(Args& args);

// Whether the WAN policies of `c` leave every result exact (dense, or top-k
// at 100%, in float32 or 16 bits of small integers, fully synchronous);
// otherwise results are only checked for their sizes.
bool Exact(const Config& c);
std::string GeoWorkloadArgs(const GeoWorkload& w);

// One worker of a cluster started by RunGeoCluster (DMLC_* environment).
// Prints a `geo-round` line per round with its own measurements.
absl::Status RunGeoWorker(const GeoWorkload& w);

struct GeoCluster {
  int parties = 2;          // training parties besides the central one
  int workers = 2;          // per party
  int servers = 1;          // per party (hier)
  int global_servers = 1;   // hier; the central servers of flat
  bool central_workers = false;  // the central party trains with `workers`
  // One address per party, the central party first (the lab's
  // LAB_PARTY_i_ADDRS); empty: everything on 127.0.0.1.
  std::vector<std::string> party_hosts;
  // Per party (index 1..P): bits/s of its link to and from the central
  // party, and the round-trip time; 0 where unknown (no lower bound then).
  std::map<int, double> up_bps, down_bps, rtt_s;
  std::string csv;          // per-round CSV (appended rows; header when new)
  std::string label;        // a free-form tag for the CSV (link setting)
  std::string log_dir;
  double timeout_s = 900;
  // The WAN policies every process runs with (their variables, set by the
  // flags or inherited), for the expected bytes and the summary.
  struct Policy {
    std::string wan_dtype = "float32";  // float32 | fp16 | bf16
    double topk = 0;                    // 0: dense
    int64_t topk_min_elems = 200000;
    bool mixed = false;
    int hfa_k2 = 0;                     // 0: no HFA
    bool exact() const { return !(topk > 0 && topk < 1) && !mixed && hfa_k2 == 0; }
    std::string Describe() const;
  } policy;
};

// The policy flags (--wan-dtype, --topk, --topk-min, --sync, --staleness,
// --hfa), each defaulting to its variable in this environment, exported
// for every process of the run.
absl::StatusOr<GeoCluster::Policy> ParseGeoPolicy(Args& args);

absl::Status RunGeoCluster(const GeoCluster& c, const GeoWorkload& w);

// The lab's view of its links ($LAB_STATE_DIR/links.txt), per party index.
absl::Status ReadLabLinks(const std::string& path, const std::vector<std::string>& names,
                          GeoCluster& c);
// "100mbit", "1gbit", "500kbit", "2000bit" (tc units, powers of 1000) -> bits/s.
absl::StatusOr<double> ParseRate(const std::string& text);

}  // namespace geops::bench
