// KVWorker<Val>: the whole worker-side API of a geops training program.
//
//   geops::KVWorker<float> kv(tier);
//   kv.Wait(kv.Pull(keys, &weights));          // round 0: initial values
//   kv.Wait(kv.PushPull(keys, grads, &weights)); // one synchronous round
//
// Every Push of a key starts that key's next round; a Pull returns the
// result of the latest round this worker pushed (or a later one). Keys are
// strictly increasing; `lens` gives each key's element count (omit it to
// split the values evenly). The Z* calls never copy tensor bytes: ZPush
// sends views of the caller's Buffer (keep it unchanged until Wait) and
// ZPull returns views of the received frames.
//
// KVWorker holds no state of its own: the checks, the cut per key and the
// rounds are KVWorkerCore's (kv_worker_core.h), which takes the dtype at
// run time. Typed views of one core share its rounds.
#pragma once

#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#include "core/kv/kv_worker_core.h"

namespace geops {

template <typename Val>
constexpr DType DTypeOf() {
  if constexpr (std::is_same_v<Val, float>) return DType::kFloat32;
  else if constexpr (std::is_same_v<Val, double>) return DType::kFloat64;
  else if constexpr (std::is_same_v<Val, int32_t>) return DType::kInt32;
  else if constexpr (std::is_same_v<Val, int64_t>) return DType::kInt64;
  else static_assert(sizeof(Val) == 0, "geops values are float, double, int32_t or int64_t");
}

template <typename Val>
class KVWorker {
 public:
  using Callback = std::function<void()>;

  // A worker of its own over `tier`: create before tier.Start().
  explicit KVWorker(TierNode& tier)
      : owned_(std::make_unique<KVWorkerCore>(tier)), core_(owned_.get()) {}
  // A typed view of `core` (e.g. WorkerNode's), which must outlive it.
  explicit KVWorker(KVWorkerCore& core) : core_(&core) {}

  int Push(const std::vector<Key>& keys, const std::vector<Val>& vals,
           const std::vector<int>& lens = {}, Callback cb = nullptr) {
    return ZPush(keys, Copy(vals), lens, cb);
  }
  int Pull(const std::vector<Key>& keys, std::vector<Val>* vals, std::vector<int>* lens = nullptr,
           Callback cb = nullptr) {
    return Send(keys, msgflag::kPull, {}, {}, {}, CopyOut(vals, lens, cb));
  }
  int PushPull(const std::vector<Key>& keys, const std::vector<Val>& vals, std::vector<Val>* outs,
               const std::vector<int>& lens = {}, Callback cb = nullptr) {
    return Send(keys, msgflag::kPush | msgflag::kPull, Copy(vals), lens, {},
                CopyOut(outs, nullptr, cb));
  }
  int ZPush(const std::vector<Key>& keys, const Buffer& vals, const std::vector<int>& lens = {},
            Callback cb = nullptr) {
    return Send(keys, msgflag::kPush, vals, lens, {}, KVWorkerCore::Notify(cb));
  }
  // `outs` receives one Buffer per key, viewing the received data.
  int ZPull(const std::vector<Key>& keys, std::vector<Buffer>* outs, Callback cb = nullptr) {
    return Send(keys, msgflag::kPull, {}, {}, {}, KVWorkerCore::Views(outs, cb));
  }
  int ZPushPull(const std::vector<Key>& keys, const Buffer& vals, std::vector<Buffer>* outs,
                const std::vector<int>& lens = {}, Callback cb = nullptr) {
    return Send(keys, msgflag::kPush | msgflag::kPull, vals, lens, {},
                KVWorkerCore::Views(outs, cb));
  }
  // Like ZPull / ZPushPull, but the values of key i end up in dests[i]
  // (sized exactly). Over rdma, with dests registered (Register), the
  // server's RDMA write lands in them directly; over tcp the transport
  // copies each value there as it arrives (counted in its stats()).
  int ZPullInto(const std::vector<Key>& keys, const std::vector<Buffer>& dests,
                Callback cb = nullptr) {
    return Send(keys, msgflag::kPull, {}, {}, dests, KVWorkerCore::Notify(cb));
  }
  int ZPushPullInto(const std::vector<Key>& keys, const Buffer& vals,
                    const std::vector<Buffer>& dests, const std::vector<int>& lens = {},
                    Callback cb = nullptr) {
    return Send(keys, msgflag::kPush | msgflag::kPull, vals, lens, dests,
                KVWorkerCore::Notify(cb));
  }
  // Registers `buf` with the transport (RDMA) so that Z* calls on it move
  // no byte through user space; a no-op over tcp.
  absl::Status Register(const Buffer& buf) { return core_->Register(buf); }

  // Master worker: the initial parameters (round 0) of `keys`.
  int Init(const std::vector<Key>& keys, const std::vector<Val>& vals,
           const std::vector<int>& lens = {}) {
    return Send(keys, msgflag::kPush | msgflag::kInit, Copy(vals), lens, {}, nullptr);
  }
  // Master worker: the update rule every server of the tier applies.
  int SetRule(const RuleSpec& rule) { return core_->SetRule(rule); }

  absl::Status Wait(int ts) { return core_->Wait(ts); }
  KVClient& client() { return core_->client(); }
  KVWorkerCore& core() { return *core_; }

 private:
  static Buffer Copy(const std::vector<Val>& vals) {
    return Buffer::CopyOf(vals.data(), vals.size() * sizeof(Val));
  }

  int Send(const std::vector<Key>& keys, uint32_t flags, Buffer values,
           const std::vector<int>& lens, std::vector<Buffer> dests, KVClient::Completion done) {
    KVWorkerCore::Call call;
    call.keys = keys;
    call.dtype = DTypeOf<Val>();
    call.flags = flags;
    call.values = std::move(values);
    call.lens.assign(lens.begin(), lens.end());
    call.dests = std::move(dests);
    return core_->Send(std::move(call), std::move(done));
  }

  static KVClient::Completion CopyOut(std::vector<Val>* vals, std::vector<int>* lens,
                                      Callback cb) {
    return [vals, lens, cb](const absl::Status& s, std::vector<Buffer>& values) {
      if (s.ok()) {
        size_t total = 0;
        for (const auto& v : values) total += v.size() / sizeof(Val);
        if (vals) vals->resize(total);
        if (lens) lens->clear();
        size_t off = 0;
        for (const auto& v : values) {
          if (vals && v.size()) std::memcpy(vals->data() + off, v.data(), v.size());
          off += v.size() / sizeof(Val);
          if (lens) lens->push_back(static_cast<int>(v.size() / sizeof(Val)));
        }
      }
      if (cb) cb();
    };
  }

  std::unique_ptr<KVWorkerCore> owned_;  // when constructed over a tier
  KVWorkerCore* core_;
};

}  // namespace geops
