// WorkerNode: this process as a worker of its party's tier, from joining to
// leaving. ps-lite's Start / Finalize for a worker: the tier made from the
// Config, the KV worker installed before anything can arrive, the stats
// line printed at the end. The geops trainers, the benches' workers and
// the Python module are all built on it.
//
//   auto node = geops::WorkerNode::Create(config);  // DMLC_ROLE=worker
//   (*node)->Start();                               // registers; blocks for the node table
//   geops::KVWorker<float> kv((*node)->kv());
//   kv.Wait(kv.PushPull(keys, grads, &weights));
//   (*node)->Finalize();                            // leaves once every worker is done
//
// or, for a whole worker program at once, RunWorker<float>(config, body).
#pragma once

#include <functional>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/base/config.h"
#include "core/cluster/tier_node.h"
#include "core/kv/kv_worker.h"
#include "core/kv/kv_worker_core.h"

namespace geops {

class WorkerNode {
 public:
  // The local tier of a worker (the master worker when the config says
  // so) with its KV worker installed, not yet joined. Errors: the tier's
  // options (an address, a key file) cannot be used.
  static absl::StatusOr<std::unique_ptr<WorkerNode>> Create(const Config& config);
  // Stops the tier before the KV worker goes: the tier's receive thread
  // calls into it until joined.
  ~WorkerNode();
  WorkerNode(const WorkerNode&) = delete;
  WorkerNode& operator=(const WorkerNode&) = delete;

  // Registers with the party's scheduler and blocks until it sent the node
  // table (or the start-up timeout). Call once.
  absl::Status Start();
  // Leaves the tier in order; returns once every worker of the tier has
  // done the same (a barrier), so no server waits on a vanished worker.
  absl::Status Finalize();
  // Stops the whole cluster, naming this worker's rank and `why` in every
  // process's log; nothing when the tier has already failed (its first
  // failure is the one to report).
  void Abort(absl::string_view why);
  // This node's geops-stats line (stats_line.h).
  void PrintStats() const;

  // Whether the scheduler counts this worker's pushes (a central-party
  // worker does only with DMLC_ENABLE_CENTRAL_WORKER=1). Known after Start.
  bool trains() const;
  const Config& config() const { return config_; }
  TierNode& tier() { return *tier_; }
  const TierNode& tier() const { return *tier_; }
  KVWorkerCore& kv() { return *kv_; }

 private:
  WorkerNode(const Config& config, std::unique_ptr<TierNode> tier);

  const Config config_;
  std::unique_ptr<TierNode> tier_;
  std::unique_ptr<KVWorkerCore> kv_;
};

// A worker program's whole life: Create and Start a WorkerNode, run `body`,
// then Finalize, or Abort naming body's error; the stats line either way.
// Returns the first error.
absl::Status RunWorker(const Config& config, const std::function<absl::Status(WorkerNode&)>& body);

// The same, with a typed KVWorker and whether the scheduler made this worker
// a trainer (see WorkerNode::trains).
template <typename Val>
absl::Status RunWorker(
    const Config& config,
    const std::function<absl::Status(TierNode&, KVWorker<Val>&, bool trains)>& body) {
  return RunWorker(config, [&body](WorkerNode& node) {
    KVWorker<Val> kv(node.kv());
    return body(node.tier(), kv, node.trains());
  });
}

}  // namespace geops
