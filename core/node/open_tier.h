// Opens a tier member over the transport its options ask for: the one
// place where the wiring picks a transport (MakeTransport) and hands it to
// the cluster layer, which never chooses one itself.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "core/cluster/tier_node.h"
#include "core/cluster/tier_scheduler.h"
#include "core/transport/transport.h"

namespace geops {

inline absl::StatusOr<std::unique_ptr<TierNode>> OpenTierNode(TierOptions options) {
  auto transport = MakeTransport(options.transport);
  if (!transport.ok()) return transport.status();
  return TierNode::Create(std::move(options), std::move(*transport));
}

inline absl::StatusOr<std::unique_ptr<TierScheduler>> OpenTierScheduler(TierOptions options) {
  auto transport = MakeTransport(options.transport);
  if (!transport.ok()) return transport.status();
  return TierScheduler::Create(std::move(options), std::move(*transport));
}

}  // namespace geops
