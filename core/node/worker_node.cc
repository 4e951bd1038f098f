#include "core/node/worker_node.h"

#include <utility>

#include "absl/strings/str_format.h"
#include "core/node/open_tier.h"
#include "core/node/stats_line.h"

namespace geops {

absl::StatusOr<std::unique_ptr<WorkerNode>> WorkerNode::Create(const Config& config) {
  TierOptions to = MakeTierOptions(config, /*global=*/false, Role::kWorker);
  to.self.master = config.master_worker;
  auto tier = OpenTierNode(to);
  if (!tier.ok()) return tier.status();
  return std::unique_ptr<WorkerNode>(new WorkerNode(config, std::move(*tier)));
}

WorkerNode::WorkerNode(const Config& config, std::unique_ptr<TierNode> tier)
    : config_(config),
      tier_(std::move(tier)),
      // The tier's data handler: installed before Start, so that nothing
      // the servers send can arrive before it.
      kv_(std::make_unique<KVWorkerCore>(*tier_)) {}

WorkerNode::~WorkerNode() {
  tier_.reset();
  kv_.reset();
}

absl::Status WorkerNode::Start() { return tier_->Start(); }

absl::Status WorkerNode::Finalize() { return tier_->Finalize(); }

void WorkerNode::Abort(absl::string_view why) {
  if (!tier_->health().ok()) return;
  tier_->Abort(absl::StrFormat("worker rank %d: %s", tier_->my_rank(), why));
}

void WorkerNode::PrintStats() const { PrintTierStats(config_, *tier_); }

bool WorkerNode::trains() const {
  const NodeInfo* me = tier_->Find(tier_->my_id());
  return me != nullptr && me->trains;
}

absl::Status RunWorker(const Config& config,
                       const std::function<absl::Status(WorkerNode&)>& body) {
  auto node = WorkerNode::Create(config);
  if (!node.ok()) return node.status();
  WorkerNode& n = **node;
  if (auto s = n.Start(); !s.ok()) return s;
  absl::Status s = body(n);
  if (s.ok()) {
    s = n.Finalize();
  } else {
    n.Abort(s.message());
  }
  n.PrintStats();
  return s;
}

}  // namespace geops
