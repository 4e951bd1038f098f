#include "roles/roles.h"

#include <optional>

#include "core/base/log.h"
#include "core/node/open_tier.h"
#include "core/node/server_node.h"
#include "core/node/stats_line.h"

namespace geops {

absl::Status RunScheduler(const Config& c) {
  bool global = c.global_role == Role::kScheduler;
  auto tier = OpenTierScheduler(MakeTierOptions(c, global, Role::kScheduler));
  if (!tier.ok()) return tier.status();
  if (auto s = (*tier)->Start(); !s.ok()) return s;
  absl::Status done = (*tier)->WaitDone();
  if (done.ok()) log::Info("%s tier: every node exited; shutting down", (*tier)->name());
  PrintTierStats(c, **tier);
  return done;
}

absl::Status RunServer(const Config& c) {
  const bool top = c.global_role != Role::kWorker;  // global server or single tier
  std::optional<TierOptions> global;
  if (c.in_global_tier()) global = MakeTierOptions(c, true, top ? Role::kServer : Role::kWorker);
  auto node = ServerNode::Create(c, MakeTierOptions(c, false, Role::kServer), std::move(global));
  if (!node.ok()) return node.status();
  const ServerNode& n = **node;
  return (*node)->Run([&c, &n] {
    PrintTierStats(c, n.local());
    if (n.global()) PrintTierStats(c, *n.global());
  });
}

}  // namespace geops
