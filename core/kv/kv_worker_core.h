// KVWorkerCore: the worker side of geops with the dtype chosen at run time.
// KVWorker<Val> (kv_worker.h) is a typed view of it, and the Python module
// wraps it directly, so both front ends check requests, cut values per key
// and number rounds in this one place.
//
//   KVWorkerCore kv(tier);                       // before tier.Start()
//   KVWorkerCore::Call c{.keys = keys, .dtype = DType::kFloat32,
//                        .flags = msgflag::kPush | msgflag::kPull,
//                        .values = grads, .lens = lens, .dest = weights};
//   kv.Wait(kv.Send(std::move(c)));             // weights hold the round's result
//
// Each key has a round per worker: a push (not an init) opens the key's
// next round, and travels with its number, as does every pull, so the
// servers can tell a late push from an early one.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/base/mutex.h"
#include "core/base/buffer.h"
#include "core/cluster/tier_node.h"
#include "core/kv/kv_client.h"
#include "core/wire/control.h"
#include "core/wire/message.h"

namespace geops {

class KVWorkerCore {
 public:
  // Installs its KVClient as `tier`'s data handler: create before
  // tier.Start(), destroy after the tier has stopped.
  explicit KVWorkerCore(TierNode& tier) : client_(tier) {}
  KVWorkerCore(const KVWorkerCore&) = delete;
  KVWorkerCore& operator=(const KVWorkerCore&) = delete;

  // A request as a caller holds it: every key's values back to back in one
  // Buffer, and (for pulls into place) every key's destination too.
  struct Call {
    std::vector<Key> keys;       // strictly increasing, at least one
    DType dtype = DType::kNone;  // of `values` and of the destinations
    uint32_t flags = 0;          // msgflag::kPush / kPull / kInit
    Buffer values;               // a push's values, whole elements of dtype
    // Elements per key. Empty: the values (or, for a pull, `dest`) split
    // evenly over the keys.
    std::vector<int64_t> lens;
    // Where pulled values must land, optional: one Buffer per key, or all
    // of them back to back in `dest`, cut as the values are (by `lens`, or
    // by the values' even split). Unset: the completion gets views of the
    // received frames.
    std::vector<Buffer> dests;
    std::optional<Buffer> dest;
  };

  // A Call checked and cut per key, not yet numbered nor sent.
  struct Prepared {
    std::vector<Key> keys;
    std::vector<Buffer> values;
    std::vector<Buffer> dests;
    DType dtype = DType::kNone;
    uint32_t flags = 0;
  };

  // Everything that can refuse a call, checked before any round moves: a
  // refused push must not put this worker out of step. InvalidArgument
  // naming the problem (decreasing keys, lens that do not cover the values).
  static absl::StatusOr<Prepared> Prepare(Call call);

  // Numbers `p`'s keys' rounds and sends it; returns its timestamp for
  // Wait(). Safe from any thread.
  int Submit(Prepared p, KVClient::Completion done = nullptr);

  // Prepare, then Submit; a refused call fails at once, through Wait() and
  // `done`, never as an exception.
  int Send(Call call, KVClient::Completion done = nullptr);

  // Master worker: the update rule (and WAN policy) every server applies.
  int SetRule(const RuleSpec& rule) { return client_.SetRule(rule); }
  // Registers `buf` with the transport (RDMA) so that requests on it, or on
  // a part of it, move no byte through user space; a no-op over tcp.
  absl::Status Register(const Buffer& buf) { return client_.Register(buf); }
  absl::Status Wait(int ts) { return client_.Wait(ts); }
  KVClient& client() { return client_; }

  // Completions for callers that want only a callback, or the per-key views
  // of a pull in `outs` (left untouched on failure).
  static KVClient::Completion Notify(std::function<void()> cb);
  static KVClient::Completion Views(std::vector<Buffer>* outs, std::function<void()> cb);

 private:
  KVClient client_;
  Mutex mu_;
  absl::flat_hash_map<Key, uint64_t> rounds_ ABSL_GUARDED_BY(mu_);
};

}  // namespace geops
