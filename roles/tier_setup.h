// How a geops process takes part in a tier: a worker's whole life in its
// party's tier, and the per-tier stats line every process prints when it
// ends (the launcher adds them up).
#pragma once

#include <functional>
#include <memory>

#include "absl/strings/str_format.h"
#include "core/node/open_tier.h"
#include "core/base/config.h"
#include "core/cluster/tier_node.h"
#include "core/kv/kv_worker.h"

namespace geops {

void PrintTierStats(const Config& c, const Tier& tier);

// Joins the local tier as a worker (the master worker when configured),
// runs `body` with whether the scheduler made this worker a trainer (see
// DMLC_ENABLE_CENTRAL_WORKER), then leaves the tier, or aborts it naming
// the error, and prints the stats line.
template <typename Val>
absl::Status RunWorker(
    const Config& c, const std::function<absl::Status(TierNode&, KVWorker<Val>&, bool trains)>& body) {
  TierOptions to = MakeTierOptions(c, false, Role::kWorker);
  to.self.master = c.master_worker;
  auto t = OpenTierNode(to);
  if (!t.ok()) return t.status();
  std::unique_ptr<TierNode> tier = std::move(*t);
  auto kv = std::make_unique<KVWorker<Val>>(*tier);  // its handler, before Start
  if (auto s = tier->Start(); !s.ok()) {
    tier.reset();  // before the worker: its receive thread calls into it
    return s;
  }
  const NodeInfo* me = tier->Find(tier->my_id());
  absl::Status s = body(*tier, *kv, me != nullptr && me->trains);
  if (s.ok()) {
    s = tier->Finalize();
  } else if (tier->health().ok()) {
    tier->Abort(absl::StrFormat("worker rank %d: %s", tier->my_rank(), s.message()));
  }
  PrintTierStats(c, *tier);
  // The tier first: its receive thread calls into the worker until joined.
  tier.reset();
  kv.reset();
  return s;
}

}  // namespace geops
