// Aggregator: the server policy of both tiers over one AggregationTable.
//
// A party's server (not top) sums its workers' pushes per key and round,
// forwards the party sum to the owning global server as one push-pull, and
// answers its workers' pulls with what comes back. A top server (a global
// server, or the only tier's server in a single-party ps-lite run) sums one
// contribution per party (plus central workers), applies the update rule
// and answers. Requests that arrive before the tier sizes are known are
// held and replayed.
#pragma once

#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <functional>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/kv/aggregation.h"
#include "core/kv/kv_client.h"
#include "core/kv/kv_server.h"
#include "core/kv/half.h"
#include "core/kv/sparse.h"

namespace geops {

// How a party server sends its sums over the WAN.
struct WanOptions {
  // Party sums of small keys wait to share one WAN message per global
  // server: the batch leaves when it holds this many bytes, when its oldest
  // key has waited `coalesce_delay`, or as soon as the server has no more
  // of its workers' messages to read, whichever comes first. A key at least
  // this big leaves at once. 0: every key in a message of its own.
  size_t coalesce_bytes = 64 << 10;
  absl::Duration coalesce_delay = absl::Milliseconds(1);
  // P3 (ENABLE_P3): sums leave in priority order, older rounds first and
  // then lower keys (keys numbered in forward order, as frameworks register
  // layers, so the layers the next forward pass needs first go first), and
  // at most `window_bytes` of them are on their way at once, each push
  // acknowledged on arrival; results are pulled in the same order through a
  // window of the same size. A key queued behind a big one overtakes
  // everything that has not left yet, in both directions.
  bool priority = false;
  size_t window_bytes = 8 << 20;
  // kFloat16 or kBFloat16: float32 sums cross the WAN (both ways) in 16
  // bits, rounded to nearest even; kNone: as they are.
  DType wire_dtype = DType::kNone;
  // Top-k with error feedback (core/kv/sparse.h): a party server sends this
  // fraction of each float32 key of at least `topk_min_elems` elements (the
  // rest as dense containers), a top server its results; 0: dense.
  double topk = 0;
  int64_t topk_min_elems = 200000;
  // MixedSync (top servers): each contribution is applied to the weights
  // when it arrives (sgd) and its pull answered with the weights as they
  // are, once its round is at most `staleness` ahead of the slowest
  // contributor's.
  bool mixed = false;
  int staleness = 2;
  // HFA (party servers): round r is a party-level aggregation of models
  // (the average stays in the party) unless r is a multiple of hfa_k2, when
  // the party's sum goes to the global tier as global round r / hfa_k2.
  // 0: off.
  int hfa_k2 = 0;
  // This server is in a global tier (the policies above apply); a single
  // tier's server ignores a WAN policy the master worker sends.
  bool global_tier = false;
};

class Aggregator {
 public:
  // `upstream` is the global tier client of a party server; null for top.
  explicit Aggregator(KVClient* upstream, WanOptions wan = {})
      : upstream_(upstream),
        wan_(wan),
        up_ef_(wan.topk, IsHalf(wan.wire_dtype) ? wan.wire_dtype : DType::kFloat32),
        down_ef_(wan.topk, IsHalf(wan.wire_dtype) ? wan.wire_dtype : DType::kFloat32) {}

  bool top() const { return upstream_ == nullptr; }

  // Decides whether a push counts as a contribution; a push that does not
  // is acknowledged (and its pull half answered) without being summed.
  // Set before Start().
  void set_contribution_filter(std::function<bool(const KVRequest&)> f) {
    counts_ = std::move(f);
  }

  // Contributions per key and round; requests wait until this is known.
  void Start(int expected);
  void Handle(KVRequest&& req);
  absl::Status SetRule(const RuleSpec& rule);
  // The rule the master worker set, with its WAN policy (GET_RULE).
  RuleSpec rule() const;

  struct Stats {
    uint64_t rounds_completed = 0;  // (key, round) pairs closed here
    uint64_t bytes_aggregated = 0;
    uint64_t duplicates = 0;  // resent pushes recognised and not counted
  };
  Stats stats() const;

  // Sends what waits to be coalesced; the server calls it whenever it has
  // read every message its workers sent so far.
  void Flush();

 private:
  struct Parked {
    KVRequest req;
    std::vector<Buffer> values;
    size_t outstanding = 0;
    DType dtype = DType::kNone;
    DType reply_as = DType::kNone;  // a 16-bit request is answered in its type
    bool reply_sparse = false;      // a kSparse request is answered in containers
  };
  void Reply(Parked& p);

  void HandleLocked(KVRequest&& req);
  // A top server's decoding of a kSparse request's values (false: answered
  // with the error).
  bool DecodeRequest(KVRequest& req, AggregationTable& table);
  // What a top server sends down for a key's new result (top-k of the
  // change since the last one, for rules that keep state), kept until the
  // next result.
  void CompressDown(Key key, DType dtype, const Buffer& result);
  bool Compressible(DType dtype, size_t bytes) const {
    return wan_.topk > 0 && dtype == DType::kFloat32 &&
           bytes / sizeof(float) >= static_cast<uint64_t>(std::max<int64_t>(wan_.topk_min_elems, 1));
  }
  DType ContainerDType() const { return IsHalf(wan_.wire_dtype) ? wan_.wire_dtype : DType::kFloat32; }
  // A party server: one result container from the global tier -> the
  // key's new float32 value (an accumulate one adds to the last result).
  absl::StatusOr<Buffer> DecodeResult(Key key, const Buffer& wire);
  // MixedSync on a top server: apply a push now; answer a pull when its
  // round is within the staleness bound.
  void ApplyMixed(KVRequest& req, AggregationTable& table, uint64_t contributor);
  bool WithinStaleness(uint64_t round) const;
  void ReleaseStale();
  bool IsResentAfterClose(const AggregationTable& table, Key key, const KVRequest& req,
                          const absl::StatusOr<std::optional<Buffer>>& added) const;
  // Why a top server cannot take `req` for `key` as it comes (a whole-key
  // request for a key it holds as slices, or the reverse); empty when fine.
  std::string MixedSlicing(const KVRequest& req, Key key) const;
  void Complete(Key key, uint64_t round, DType dtype, Buffer total, bool slice);
  void Publish(Key key, uint64_t round, DType dtype, Buffer result, bool slice = false);
  AggregationTable& TableOf(bool slice) { return slice ? slices_ : table_; }
  // Queues a fetch of a key's initial value for the global tier.
  void Fetch(Key key, uint64_t round, DType dtype);
  void FlushLocked();
  void FailKey(Key key, const std::string& why);
  // Upstream requests are queued under the lock and sent after it is
  // released: a request that fails at once completes synchronously, and its
  // completion takes the lock again.
  void RunDeferred(std::unique_lock<std::mutex>& lock);

  KVClient* upstream_;
  // Set at construction from this process's variables; replaced by the
  // master worker's policy when it sends one (guarded by mu_).
  WanOptions wan_;
  enum class Policy { kUnknown, kAsking, kKnown };
  // A party server learns the master worker's policy from the global
  // servers before its first sum leaves: the sums that complete meanwhile
  // wait here.
  Policy policy_ = Policy::kUnknown;
  struct Completed {
    Key key;
    uint64_t round;
    DType dtype;
    Buffer total;
    bool slice;
  };
  std::vector<Completed> pending_completes_;
  void AskPolicy();
  void AdoptPolicy(const RuleSpec& r);
  std::function<bool(const KVRequest&)> counts_;
  bool said_ignored_ = false;
  mutable std::mutex mu_;
  bool started_ = false;
  std::vector<KVRequest> held_;
  AggregationTable table_{0};
  // A top server's slices of big keys (msgflag::kSlice), apart from whole
  // keys: the key's owner holds both its initial whole value and a slice.
  AggregationTable slices_{0};
  RuleSpec rule_;
  AggregationTable::Token next_token_ = 1;
  std::map<AggregationTable::Token, std::pair<std::shared_ptr<Parked>, size_t>> tokens_;
  Stats stats_;
  std::vector<std::function<void()>> deferred_;

  struct Outgoing {
    Key key;
    uint64_t round;  // in the global tier
    DType dtype;
    Buffer total;  // the party's sum; none for a fetch
    bool fetch;    // a pull of the initial value (round 0)
    uint64_t local_round = 0;  // what its result is published as (HFA: round * K2)
  };
  using Batch = std::shared_ptr<std::vector<Outgoing>>;
  // Queues a party sum or a fetch for the global tier (see WanOptions).
  void Enqueue(Outgoing o);
  // Splits `out` into requests the client accepts and calls `each` on them.
  void ForEachRequest(std::vector<Outgoing> out, const std::function<void(Batch)>& each);
  // One request for `batch` (flags: push, pull or both); results are
  // published, failures fail the keys, then `then` runs (under the lock).
  void Send(Batch batch, uint32_t flags, std::function<void()> then = nullptr);
  // P3: sends from queue_, and asks for results from pulls_, while their
  // windows allow.
  void Pump();
  void PumpPulls();
  // By (round, key): the order P3 sends in.
  using Queue = std::multimap<std::pair<uint64_t, Key>, Outgoing>;
  // Up to coalesce_bytes (at least one entry) from the front of `queue`,
  // their bytes added to `in_flight`.
  std::vector<Outgoing> TakeBatch(Queue& queue, size_t& in_flight);
  // Top-k state of each direction, and per key the last result a top
  // server sent down: the dense value it stands for and its container.
  ErrorFeedback up_ef_;
  ErrorFeedback down_ef_;
  struct Down {
    Buffer dense;
    Buffer wire;
  };
  std::map<Key, Down> down_;
  // MixedSync: the latest round applied per (key, contributor), the
  // latest round per contributor, and pulls waiting for the slowest.
  std::map<std::pair<Key, uint64_t>, uint64_t> mixed_applied_;
  // MixedSync with top-k down: parties pull at their own pace and would
  // miss each other's changes in a shared stream, so each party gets its
  // own: the weights it was last answered with per key, and its own error
  // feedback of the increments since.
  std::map<std::pair<uint64_t, Key>, Buffer> mixed_sent_;
  std::map<uint64_t, ErrorFeedback> mixed_down_ef_;
  // The container for `who`'s pull of `key` with the weights `now`.
  Buffer MixedDown(uint64_t who, Key key, const Buffer& now, bool sparse);
  static uint64_t ContributorOf(const KVRequest& req);
  std::map<uint64_t, uint64_t> contributor_round_;
  int expected_ = 0;
  std::vector<std::shared_ptr<Parked>> stale_;
  std::vector<Outgoing> outbox_;  // party sums and fetches not yet sent
  size_t outbox_bytes_ = 0;
  absl::Time outbox_since_;       // when its oldest entry came
  // P3: what waits for the window, by (round, key); and the bytes of
  // pushes sent and not yet acknowledged.
  Queue queue_;
  size_t in_flight_ = 0;
  // P3: sums sent whose results are not asked for yet, by (round, key); and
  // the bytes of results asked for and not yet here.
  Queue pulls_;
  size_t pulls_in_flight_ = 0;
};

}  // namespace geops
