// ServerNode: one server process, assembled: its party's tier, the global
// tier when it is in one (as a global server, or as a party server, the
// global servers' client), a KVServer on each tier it serves, and the
// Aggregator of its kind behind them.
//
// The geops executable's server role is Create + Run; a program that
// embeds a server does the same.
#pragma once

#include <functional>
#include <memory>
#include <optional>

#include "absl/status/statusor.h"
#include "core/base/config.h"
#include "core/cluster/tier_node.h"
#include "core/kv/aggregator.h"
#include "core/kv/kv_client.h"
#include "core/kv/kv_server.h"

namespace geops {

class ServerNode {
 public:
  // `local` is the party tier's options, `global` the global tier's (absent
  // for a single tier's server); `c` says which kind of server this is and
  // how it aggregates.
  static absl::StatusOr<std::unique_ptr<ServerNode>> Create(const Config& c, TierOptions local,
                                                            std::optional<TierOptions> global);
  // Stops both tiers' threads before anything they call into goes.
  ~ServerNode();
  ServerNode(const ServerNode&) = delete;
  ServerNode& operator=(const ServerNode&) = delete;

  // Joins the tiers, aggregates until every worker this server serves is
  // done, and leaves the global tier, then the party's. `report` runs
  // after an orderly or failed end, once the tiers' counters are final
  // (not when a tier could not start).
  absl::Status Run(const std::function<void()>& report);

  const TierNode& local() const { return *local_; }
  const TierNode* global() const { return global_.get(); }

 private:
  explicit ServerNode(const Config& c) : config_(c) {}
  // The KVServers and the Aggregator over the tiers already created.
  void Assemble();
  // Contributions per key and round (0: nobody trains).
  int CountContributors() const;

  const Config config_;
  // A global server, or a single tier's: sums the last tier and applies
  // the rule; otherwise a party server with an upstream client.
  bool top_ = true;
  // Declared so that the tiers (and their receive threads) go first.
  std::unique_ptr<Aggregator> agg_;
  std::unique_ptr<KVClient> upstream_;
  std::unique_ptr<KVServer> global_server_, local_server_;
  std::unique_ptr<TierNode> global_, local_;
};

}  // namespace geops
