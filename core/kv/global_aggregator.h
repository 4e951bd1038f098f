// GlobalAggregator: the top server's side of aggregation (a global server,
// or a single tier's server).
//
// Over the SumEngine it applies the update rule (sum, sgd, average) to
// each closed round, answers 16-bit and top-k requests in their own form
// (a top-k result carries the change since the last one, with the
// downward residuals kept here), and runs MixedSync: pushes applied on
// arrival, pulls answered once their round is within the staleness bound.
// Lock order: core/kv/aggregator.h.
#pragma once

#include <map>
#include <set>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/kv/aggregator.h"
#include "core/kv/sparse.h"

namespace geops {

class GlobalAggregator : public Aggregator {
 public:
  explicit GlobalAggregator(AggregatorOptions options);

  void Start(int expected) override { engine_.Start(expected); }
  void Handle(KVRequest&& req) override { engine_.Handle(std::move(req)); }
  absl::Status SetRule(const RuleSpec& rule) override;
  RuleSpec rule() const override;
  Stats stats() const override { return engine_.Stats(); }
  absl::Status EnableCheckpoints(const CheckpointOptions& options, uint32_t rank,
                                 uint32_t servers) override;
  absl::Status CheckpointNow() override;

 private:
  // Every key's latest value (shared, not copied) and the rule in force.
  CheckpointImage SnapshotLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(engine_.mu());
  // Publishes a checkpoint's values as round 0 (what a round-0 pull reads)
  // and adopts its rule.
  absl::Status RestoreLocked(const CheckpointImage& image) ABSL_EXCLUSIVE_LOCKS_REQUIRED(engine_.mu());
  // After `key` closed `round`: a checkpoint when one is due.
  void MaybeCheckpoint(Key key, bool slice, uint64_t round)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(engine_.mu());
  // An initial value for a key restored from a checkpoint: the checkpoint
  // wins; false (and answered with the error) when the two disagree in size
  // or type.
  bool KeepRestored(const KVRequest& req, size_t i, bool slice)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(engine_.mu());
  // Why a round-0 pull of a whole key that resumed as slices is refused;
  // empty for every other request.
  std::string WholeOfSlicedRestored(const KVRequest& req) ABSL_EXCLUSIVE_LOCKS_REQUIRED(engine_.mu());

  WanPolicy policy() const ABSL_LOCKS_EXCLUDED(mu_);
  void HandleLocked(KVRequest&& req) ABSL_EXCLUSIVE_LOCKS_REQUIRED(engine_.mu());
  void Reply(Parked& p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(engine_.mu());
  // Why `req` cannot be taken for `key` as it comes (a whole-key request
  // for a key held as slices, or the reverse); empty when fine.
  std::string MixedSlicing(const KVRequest& req, Key key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(engine_.mu());
  // Decodes a kSparse request's values (false: answered with the error).
  bool DecodeRequest(KVRequest& req, AggregationTable& table)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(engine_.mu());
  // Sums (or, MixedSync, applies) a push that counts and acknowledges a
  // bare one; false: answered with an error.
  bool Push(KVRequest& req, AggregationTable& table, bool mixed)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(engine_.mu());
  void Init(const KVRequest& req, AggregationTable& table, bool slice)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(engine_.mu());
  // The rule applied to a closed round's total, then published.
  void Complete(Key key, uint64_t round, DType dtype, Buffer total, bool slice)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(engine_.mu());
  // What goes down for a key's new result (top-k of the change since the
  // last one, for rules that keep state), kept until the next result.
  void CompressDown(Key key, DType dtype, const Buffer& result, UpdateRule rule)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(engine_.mu());
  void AdoptPolicy(const RuleSpec& r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(engine_.mu(), mu_);

  // MixedSync: apply a push now (its keys cleared when it was answered
  // with an error); answer a pull when its round is within the bound.
  void ApplyMixed(KVRequest& req, AggregationTable& table, uint64_t contributor)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(engine_.mu());
  bool WithinStaleness(uint64_t round, uint32_t staleness) ABSL_EXCLUSIVE_LOCKS_REQUIRED(engine_.mu());
  void ReleaseStale() ABSL_EXCLUSIVE_LOCKS_REQUIRED(engine_.mu());
  // The container for `who`'s pull of `key` with the weights `now`.
  Buffer MixedDown(uint64_t who, Key key, const Buffer& now, bool sparse, const WanPolicy& p)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(engine_.mu());

  const bool global_tier_;
  const std::function<bool(const KVRequest&)> counts_;
  SumEngine engine_;

  mutable Mutex mu_;
  RuleSpec rule_ ABSL_GUARDED_BY(mu_);
  bool rule_set_ ABSL_GUARDED_BY(mu_) = false;
  // Set at construction from this process's variables; replaced by the
  // master worker's policy when it sends one.
  WanPolicy policy_ ABSL_GUARDED_BY(mu_);

  bool said_ignored_ ABSL_GUARDED_BY(engine_.mu()) = false;
  // Top-k down: the residuals, and per key the last result sent down: the
  // dense value it stands for and its container.
  ErrorFeedback down_ef_ ABSL_GUARDED_BY(engine_.mu());
  struct Down {
    Buffer dense;
    Buffer wire;
  };
  std::map<Key, Down> down_ ABSL_GUARDED_BY(engine_.mu());
  // MixedSync: the latest round applied per (key, contributor), the
  // latest round per contributor, and pulls waiting for the slowest.
  std::map<std::pair<Key, uint64_t>, uint64_t> mixed_applied_ ABSL_GUARDED_BY(engine_.mu());
  std::map<uint64_t, uint64_t> contributor_round_ ABSL_GUARDED_BY(engine_.mu());
  std::vector<std::shared_ptr<Parked>> stale_ ABSL_GUARDED_BY(engine_.mu());
  // MixedSync with top-k down: parties pull at their own pace and would
  // miss each other's changes in a shared stream, so each party gets its
  // own: the weights it was last answered with per key, and its own error
  // feedback of the increments since.
  std::map<std::pair<uint64_t, Key>, Buffer> mixed_sent_ ABSL_GUARDED_BY(engine_.mu());
  std::map<uint64_t, ErrorFeedback> mixed_down_ef_ ABSL_GUARDED_BY(engine_.mu());

  // Durable state: set before Start(), then only used under engine_.mu().
  std::unique_ptr<Checkpointer> checkpointer_;
  // Keys (whole or slice) whose value came from the checkpoint resumed from.
  std::set<std::pair<Key, bool>> restored_ ABSL_GUARDED_BY(engine_.mu());
  std::set<Key> sliced_restored_ ABSL_GUARDED_BY(engine_.mu());
  bool said_restored_ ABSL_GUARDED_BY(engine_.mu()) = false;
};

}  // namespace geops
