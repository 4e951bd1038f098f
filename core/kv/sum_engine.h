// SumEngine: the per-key, per-round summing that the servers of both tiers
// share.
//
// It owns the AggregationTable of whole keys and the one of slices of big
// keys, holds the requests that arrive before the number of contributions
// is known and replays them, adds pushes while recognising resent ones,
// parks pulls until their round is published and answers them. What a
// request means beyond that (an update rule, a forward to the global tier)
// belongs to a side: GlobalAggregator or PartyAggregator gives the engine
// its request handler and its reply, and the engine calls both with its
// lock held. The lock order between the engine, the sides and the WAN
// uplink is written in core/kv/aggregator.h.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "core/base/mutex.h"
#include "core/kv/aggregation.h"
#include "core/kv/kv_server.h"

namespace geops {

struct AggregatorStats {
  uint64_t rounds_completed = 0;  // (key, round) pairs closed here
  uint64_t bytes_aggregated = 0;
  uint64_t duplicates = 0;  // resent pushes recognised and not counted
};

// A pull (or the pull half of a push-pull) waiting for its keys' values.
struct Parked {
  KVRequest req;
  std::vector<Buffer> values;  // one per key of req, filled as they come
  size_t outstanding = 0;      // keys still missing; 0 once answered
  DType dtype = DType::kNone;
  DType reply_as = DType::kNone;  // a 16-bit request is answered in its type
  bool reply_sparse = false;      // a kSparse request is answered in containers
};

class SumEngine {
 public:
  struct Hooks {
    // A request once the engine is started (held ones when it starts).
    std::function<void(KVRequest&&)> handle;
    // Answers a parked pull whose every key has its value.
    std::function<void(Parked&)> reply;
  };
  explicit SumEngine(Hooks hooks) : hooks_(std::move(hooks)) {}

  // Contributions per key and round; requests wait until this is known.
  void Start(int expected) ABSL_LOCKS_EXCLUDED(mu_);
  void Handle(KVRequest&& req) ABSL_LOCKS_EXCLUDED(mu_);
  AggregatorStats Stats() const ABSL_LOCKS_EXCLUDED(mu_);

  // The lock, for a side's work outside a request (a rule, a result from
  // the global tier). Unlock() then runs what was deferred meanwhile.
  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION(mu_) { mu_.Lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION(mu_);
  void AssertHeld() const ABSL_ASSERT_EXCLUSIVE_LOCK(mu_) { mu_.AssertHeld(); }
  Mutex& mu() const ABSL_LOCK_RETURNED(mu_) { return mu_; }

  // Runs `work` once the lock is released: requests to the global tier,
  // whose completion can run at once and take the lock again.
  void Defer(std::function<void()> work) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    deferred_.push_back(std::move(work));
  }

  // Whole keys, or a global server's slices of big keys (msgflag::kSlice):
  // a key's owner holds both its initial whole value and a slice.
  AggregationTable& table(bool slice) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return slice ? slices_ : table_;
  }
  int expected() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return expected_; }
  AggregatorStats& stats() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stats_; }

  // Adds each value of `req`, a push that counts, in its table; `complete`
  // gets each key whose round this push closed, with the round's total.
  // false: `req` was answered with an error.
  bool Sum(const KVRequest& req, uint64_t contributor,
           const std::function<void(Key, Buffer)>& complete) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes each key's value for req.round when it is published, parks the
  // pull for the others, and replies once every key has one. Returns the
  // keys nobody was waiting for before (for a party server's fetch).
  std::vector<Key> PullOrPark(std::shared_ptr<Parked> parked, KVRequest&& req)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Records a key's value for `round` and answers the pulls it completes.
  void Publish(Key key, uint64_t round, DType dtype, Buffer result, bool slice = false)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Answers every pull waiting for `key` with the error, once each.
  void FailKey(Key key, const std::string& why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Who pushed: the same node id can exist in both tiers of a global server.
  static uint64_t ContributorOf(const KVRequest& req);

 private:
  bool IsResentAfterClose(const AggregationTable& table, Key key, const KVRequest& req,
                          const absl::StatusOr<std::optional<Buffer>>& added) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Hooks hooks_;
  mutable Mutex mu_;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  int expected_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<KVRequest> held_ ABSL_GUARDED_BY(mu_);
  AggregationTable table_ ABSL_GUARDED_BY(mu_){0};
  AggregationTable slices_ ABSL_GUARDED_BY(mu_){0};
  AggregationTable::Token next_token_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<AggregationTable::Token, std::pair<std::shared_ptr<Parked>, size_t>> tokens_
      ABSL_GUARDED_BY(mu_);
  AggregatorStats stats_ ABSL_GUARDED_BY(mu_);
  std::vector<std::function<void()>> deferred_ ABSL_GUARDED_BY(mu_);
};

}  // namespace geops
