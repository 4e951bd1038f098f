// WanUplink: how a party server's sums leave for the global tier.
//
// It owns the outbox of party sums and round-0 fetches, coalesces small
// keys into shared WAN messages, orders and windows them (P3), and encodes
// them in the WAN policy's form (top-k with the upward residuals, or 16
// bits). A batch leaves when it is big enough, on the uplink's own
// deadline (a timer thread), or when the server has read every message its
// workers sent (Flush). Requests go to the KVClient with the uplink's lock
// released; what comes back goes to the party's result handler.
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "core/base/mutex.h"
#include "absl/time/time.h"
#include "core/base/defaults.h"
#include "core/base/wan_policy.h"
#include "core/kv/kv_client.h"
#include "core/kv/sparse.h"

namespace geops {

// How a party server sends its sums over the WAN (what it sends them as is
// the WanPolicy).
struct WanOptions {
  // Party sums of small keys wait to share one WAN message per global
  // server: the batch leaves when it holds this many bytes, when its oldest
  // key has waited `coalesce_delay`, or as soon as the server has no more
  // of its workers' messages to read, whichever comes first. A key at least
  // this big leaves at once. 0: every key in a message of its own.
  size_t coalesce_bytes = defaults::kWanCoalesceBytes;
  absl::Duration coalesce_delay = defaults::kWanCoalesceDelay;
  // P3 (ENABLE_P3): sums leave in priority order, older rounds first and
  // then lower keys (keys numbered in forward order, as frameworks register
  // layers, so the layers the next forward pass needs first go first), and
  // at most `window_bytes` of them are on their way at once, each push
  // acknowledged on arrival; results are pulled in the same order through a
  // window of the same size. A key queued behind a big one overtakes
  // everything that has not left yet, in both directions.
  bool priority = false;
  size_t window_bytes = defaults::kWanWindowBytes;
};

class WanUplink {
 public:
  struct Outgoing {
    Key key;
    uint64_t round;  // in the global tier
    DType dtype;
    Buffer total;  // the party's sum; none for a fetch
    bool fetch;    // a pull of the initial value (round 0)
    uint64_t local_round = 0;  // what its result is published as (HFA: round * K2)
  };
  using Batch = std::shared_ptr<std::vector<Outgoing>>;
  // How one request of `batch` ended: `flags` says whether it pulled,
  // `sparse` whether results are top-k containers, `wire` their dtype
  // otherwise. Called without the uplink's lock.
  using ResultHandler = std::function<void(const Batch& batch, uint32_t flags, bool sparse,
                                           DType wire, const absl::Status& status,
                                           std::vector<Buffer>& results)>;

  WanUplink(KVClient& upstream, WanOptions options, const WanPolicy& policy,
            ResultHandler on_result);
  ~WanUplink();
  WanUplink(const WanUplink&) = delete;
  WanUplink& operator=(const WanUplink&) = delete;

  // What sums are encoded as from now on (the master worker's policy);
  // starts the upward residuals afresh.
  void SetPolicy(const WanPolicy& policy) ABSL_LOCKS_EXCLUDED(mu_);
  // Queues a sum or a fetch. Never sends from here (the caller may hold
  // the sum engine's lock): a batch it completes waits for SendReady().
  void Enqueue(Outgoing o) ABSL_LOCKS_EXCLUDED(mu_);
  // Sends the batches that are ready. Call without any aggregator lock.
  void SendReady() ABSL_LOCKS_EXCLUDED(mu_);
  // Sends everything queued now, coalesced or not.
  void Flush() ABSL_LOCKS_EXCLUDED(mu_);
  // Stops the timer; nothing is sent afterwards. Before the KVClient goes.
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  // One request, encoded and ready for the client.
  struct Submission {
    Batch batch;
    uint32_t flags;
    bool sparse;
    DType wire;
    std::shared_ptr<std::vector<Key>> keys;
    std::shared_ptr<std::vector<uint64_t>> rounds;
    std::vector<Buffer> values;
    std::function<void()> then;  // under the lock, once it completed
  };
  // By (round, key): the order P3 sends in.
  using Queue = std::multimap<std::pair<uint64_t, Key>, Outgoing>;

  void FlushLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // P3: sends from queue_, and asks for results from pulls_, while their
  // windows allow.
  void Pump() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PumpPulls() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Up to coalesce_bytes (at least one entry) from the front of `queue`,
  // their bytes added to `in_flight`.
  std::vector<Outgoing> TakeBatch(Queue& queue, size_t& in_flight)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Splits `out` into requests the client accepts and calls `each` on them.
  static void ForEachRequest(std::vector<Outgoing> out, const std::function<void(Batch)>& each);
  // Encodes one request for `batch` (flags: push, pull or both) into ready_.
  void Prepare(Batch batch, uint32_t flags, std::function<void()> then = nullptr)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Submit(Submission sub) ABSL_LOCKS_EXCLUDED(mu_);
  void TimerLoop() ABSL_LOCKS_EXCLUDED(mu_);

  KVClient& upstream_;
  const WanOptions options_;
  const ResultHandler on_result_;

  Mutex mu_;
  WanPolicy policy_ ABSL_GUARDED_BY(mu_);
  ErrorFeedback up_ef_ ABSL_GUARDED_BY(mu_);  // the upward residuals, per key
  std::vector<Outgoing> outbox_ ABSL_GUARDED_BY(mu_);  // not yet sent
  size_t outbox_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time outbox_since_ ABSL_GUARDED_BY(mu_);  // when its oldest entry came
  // P3: what waits for the window, by (round, key); and the bytes of
  // pushes sent and not yet acknowledged.
  Queue queue_ ABSL_GUARDED_BY(mu_);
  size_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  // P3: sums sent whose results are not asked for yet, by (round, key); and
  // the bytes of results asked for and not yet here.
  Queue pulls_ ABSL_GUARDED_BY(mu_);
  size_t pulls_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<Submission> ready_ ABSL_GUARDED_BY(mu_);
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  CondVar wake_;  // the timer: an outbox that was empty has an entry
  std::thread timer_;
};

}  // namespace geops
