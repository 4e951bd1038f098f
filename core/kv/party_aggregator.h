// PartyAggregator: a party server's side of aggregation.
//
// Over the SumEngine it sums its workers' pushes per key and round and
// sends exactly one contribution per key and round up through its
// WanUplink (HFA: only every K2-th round; the others are averaged and
// answered in the party), fetches initial values for round-0 pulls, and
// publishes the global tier's results (decoding top-k and 16-bit ones) to
// answer its workers. Before its first sum leaves it asks the global
// servers for the master worker's WAN policy (GET_RULE).
// Lock order: core/kv/aggregator.h.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/kv/aggregator.h"

namespace geops {

class PartyAggregator : public Aggregator {
 public:
  PartyAggregator(KVClient& upstream, AggregatorOptions options);

  void Start(int expected) override { engine_.Start(expected); }
  void Handle(KVRequest&& req) override { engine_.Handle(std::move(req)); }
  // Refused: the rule is set on the global servers.
  absl::Status SetRule(const RuleSpec& rule) override;
  RuleSpec rule() const override { return RuleSpec{}; }
  Stats stats() const override { return engine_.Stats(); }
  void Flush() override { uplink_.Flush(); }
  void Stop() override { uplink_.Stop(); }

 private:
  WanPolicy policy() const ABSL_LOCKS_EXCLUDED(mu_);
  void HandleLocked(KVRequest&& req) ABSL_EXCLUSIVE_LOCKS_REQUIRED(engine_.mu());
  void Reply(Parked& p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(engine_.mu());
  // A worker's initial values (ps-lite style) go on to the global copy.
  void ForwardInit(KVRequest&& req) ABSL_EXCLUSIVE_LOCKS_REQUIRED(engine_.mu());
  void Complete(Key key, uint64_t round, DType dtype, Buffer total)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(engine_.mu());
  // Queues a sum or a fetch for the global tier; it leaves once the
  // engine's lock is released, or later with its batch.
  void Enqueue(WanUplink::Outgoing o) ABSL_EXCLUSIVE_LOCKS_REQUIRED(engine_.mu());
  void AskPolicy() ABSL_EXCLUSIVE_LOCKS_REQUIRED(engine_.mu());
  void AdoptPolicy(const RuleSpec& r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(engine_.mu());
  // What the global tier answered for a batch of sums or fetches.
  void OnResult(const WanUplink::Batch& batch, uint32_t flags, bool sparse, DType wire,
                const absl::Status& s, std::vector<Buffer>& results) ABSL_LOCKS_EXCLUDED(engine_.mu());
  // One result container from the global tier -> the key's new float32
  // value (an accumulate one adds to the last result).
  absl::StatusOr<Buffer> DecodeResult(Key key, const Buffer& wire)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(engine_.mu());

  KVClient& upstream_;
  SumEngine engine_;

  mutable Mutex mu_;
  // Set at construction from this process's variables; replaced by the
  // master worker's policy when it sends one.
  WanPolicy policy_ ABSL_GUARDED_BY(mu_);

  // The sums that complete while the policy is being asked for wait here.
  enum class PolicyState { kUnknown, kAsking, kKnown };
  PolicyState policy_state_ ABSL_GUARDED_BY(engine_.mu()) = PolicyState::kUnknown;
  struct Completed {
    Key key;
    uint64_t round;
    DType dtype;
    Buffer total;
  };
  std::vector<Completed> pending_completes_ ABSL_GUARDED_BY(engine_.mu());

  // Last: its timer thread stops before the rest goes.
  WanUplink uplink_;
};

}  // namespace geops
