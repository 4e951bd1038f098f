// Aggregator: what a server of either tier does with its requests, as
// KVServer calls it.
//
// A party's server (PartyAggregator, core/kv/party_aggregator.h) sums its
// workers' pushes per key and round, forwards the party sum to the owning
// global server through its WanUplink, and answers its workers' pulls with
// what comes back. A top server (GlobalAggregator,
// core/kv/global_aggregator.h: a global server, or the only tier's server
// in a single-party ps-lite run) sums one contribution per party (plus
// central workers), applies the update rule and answers. Both sum over one
// SumEngine (core/kv/sum_engine.h), which holds the requests that arrive
// before the tier sizes are known and replays them.
//
// Lock order. Each class has its own lock; one may be taken while holding
// only those above it in this list, never the reverse:
//   1. SumEngine::mu_         the tables, parked pulls, held requests, and
//                             the sides' per-round state (guarded by it);
//   2. GlobalAggregator::mu_  the rule and the WAN policy in force
//      or PartyAggregator::mu_ (a process has one side, never both);
//   3. WanUplink::mu_         the outbox, P3's queues and windows, the
//                             upward residuals.
// Requests to the global tier (KVClient) are sent with none of them held,
// so their completions, which may run at once, take them from the top.
#pragma once

#include <functional>
#include <memory>

#include "absl/status/status.h"
#include "core/base/wan_policy.h"
#include "core/kv/checkpointer.h"
#include "core/kv/kv_client.h"
#include "core/kv/kv_server.h"
#include "core/kv/sum_engine.h"
#include "core/kv/wan_uplink.h"

namespace geops {

class Aggregator {
 public:
  using Stats = AggregatorStats;
  virtual ~Aggregator() = default;

  // Contributions per key and round; requests wait until this is known.
  virtual void Start(int expected) = 0;
  virtual void Handle(KVRequest&& req) = 0;
  virtual absl::Status SetRule(const RuleSpec& rule) = 0;
  // The rule the master worker set, with its WAN policy (GET_RULE).
  virtual RuleSpec rule() const = 0;
  virtual Stats stats() const = 0;
  // Sends what waits to be coalesced; the server calls it whenever it has
  // read every message its workers sent so far. Nothing to do on top.
  virtual void Flush() {}
  // Sends nothing more upstream; call once the tiers are stopped and before
  // the global tier's client is destroyed.
  virtual void Stop() {}

  // Durable state (core/kv/checkpointer.h), for a top server: resumes from
  // the newest checkpoint in options.dir, if any, and writes new ones from
  // then on. Call before Start(). This is server `rank` of `servers` in
  // the tier whose keys it holds. A party server holds nothing that
  // outlives its party, so it refuses.
  virtual absl::Status EnableCheckpoints(const CheckpointOptions& options, uint32_t rank,
                                         uint32_t servers) {
    return absl::FailedPreconditionError("only a top server writes checkpoints");
  }
  // Writes a last checkpoint when checkpoints are on (an orderly end).
  virtual absl::Status CheckpointNow() { return absl::OkStatus(); }
};

struct AggregatorOptions {
  // This server's own WAN policy, until the master worker's replaces it.
  WanPolicy policy;
  // A party server's batching of its sums (WanUplink).
  WanOptions uplink;
  // This server is in a global tier (the policies apply); a single tier's
  // server ignores a WAN policy the master worker sends.
  bool global_tier = false;
  // A top server: whether a push counts as a contribution; one that does
  // not is acknowledged (and its pull half answered) without being summed.
  // Unset: every push counts.
  std::function<bool(const KVRequest&)> counts;
};

// A party server's aggregator when `upstream` (its global tier client) is
// given; a top server's otherwise.
std::unique_ptr<Aggregator> MakeAggregator(KVClient* upstream, AggregatorOptions options);

}  // namespace geops
