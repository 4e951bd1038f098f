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
#pragma once

#include <cstring>
#include <mutex>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_format.h"
#include "core/kv/kv_client.h"

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

  explicit KVWorker(TierNode& tier) : client_(tier) {}

  int Push(const std::vector<Key>& keys, const std::vector<Val>& vals,
           const std::vector<int>& lens = {}, Callback cb = nullptr) {
    return ZPush(keys, Buffer::CopyOf(vals.data(), vals.size() * sizeof(Val)), lens, cb);
  }
  int Pull(const std::vector<Key>& keys, std::vector<Val>* vals, std::vector<int>* lens = nullptr,
           Callback cb = nullptr) {
    return Send(keys, {}, msgflag::kPull, /*advance=*/false, CopyOut(vals, lens, cb));
  }
  int PushPull(const std::vector<Key>& keys, const std::vector<Val>& vals, std::vector<Val>* outs,
               const std::vector<int>& lens = {}, Callback cb = nullptr) {
    Buffer all = Buffer::CopyOf(vals.data(), vals.size() * sizeof(Val));
    return SendSplit(keys, all, lens, msgflag::kPush | msgflag::kPull, true,
                     CopyOut(outs, nullptr, cb));
  }
  int ZPush(const std::vector<Key>& keys, const Buffer& vals, const std::vector<int>& lens = {},
            Callback cb = nullptr) {
    return SendSplit(keys, vals, lens, msgflag::kPush, true, Notify(cb));
  }
  // `outs` receives one Buffer per key, viewing the received data.
  int ZPull(const std::vector<Key>& keys, std::vector<Buffer>* outs, Callback cb = nullptr) {
    return Send(keys, {}, msgflag::kPull, false, Views(outs, cb));
  }
  int ZPushPull(const std::vector<Key>& keys, const Buffer& vals, std::vector<Buffer>* outs,
                const std::vector<int>& lens = {}, Callback cb = nullptr) {
    return SendSplit(keys, vals, lens, msgflag::kPush | msgflag::kPull, true, Views(outs, cb));
  }
  // Like ZPull / ZPushPull, but the values of key i end up in dests[i]
  // (sized exactly). Over rdma, with dests registered (Register), the
  // server's RDMA write lands in them directly; over tcp the transport
  // copies each value there as it arrives (counted in its stats()).
  int ZPullInto(const std::vector<Key>& keys, const std::vector<Buffer>& dests,
                Callback cb = nullptr) {
    return Send(keys, {}, msgflag::kPull, false, Notify(cb), dests);
  }
  int ZPushPullInto(const std::vector<Key>& keys, const Buffer& vals,
                    const std::vector<Buffer>& dests, const std::vector<int>& lens = {},
                    Callback cb = nullptr) {
    return SendSplit(keys, vals, lens, msgflag::kPush | msgflag::kPull, true, Notify(cb), dests);
  }
  // Registers `buf` with the transport (RDMA) so that Z* calls on it move
  // no byte through user space; a no-op over tcp.
  absl::Status Register(const Buffer& buf) { return client_.Register(buf); }

  // Master worker: the initial parameters (round 0) of `keys`.
  int Init(const std::vector<Key>& keys, const std::vector<Val>& vals,
           const std::vector<int>& lens = {}) {
    Buffer all = Buffer::CopyOf(vals.data(), vals.size() * sizeof(Val));
    return SendSplit(keys, all, lens, msgflag::kPush | msgflag::kInit, false, nullptr);
  }
  // Master worker: the update rule every server of the tier applies.
  int SetRule(const RuleSpec& rule) { return client_.SetRule(rule); }

  absl::Status Wait(int ts) { return client_.Wait(ts); }
  KVClient& client() { return client_; }

 private:
  // Per-key rounds travel with the request; a push opens the next round.
  std::vector<uint64_t> Rounds(const std::vector<Key>& keys, bool advance) {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<uint64_t> out(keys.size());
    for (size_t i = 0; i < keys.size(); ++i) {
      uint64_t& r = rounds_[keys[i]];
      if (advance) ++r;
      out[i] = r;
    }
    return out;
  }

  int Send(const std::vector<Key>& keys, std::vector<Buffer> values, uint32_t flags, bool advance,
           KVClient::Completion done, std::vector<Buffer> dests = {}) {
    // Everything that can reject a request is checked before its keys'
    // rounds advance: a rejected push must not put this worker out of step.
    for (size_t i = 1; i < keys.size(); ++i) {
      if (keys[i] <= keys[i - 1]) {
        return client_.Reject(absl::InvalidArgumentError("keys must be strictly increasing"),
                              std::move(done));
      }
    }
    if (keys.empty() || (!dests.empty() && dests.size() != keys.size())) {
      return client_.Reject(
          absl::InvalidArgumentError("a request needs keys, and one destination per key"),
          std::move(done));
    }
    std::vector<uint64_t> rounds = Rounds(keys, advance);
    KVClient::Request req{keys, std::move(values), rounds, DTypeOf<Val>(), flags,
                          std::move(dests)};
    return client_.Submit(std::move(req), std::move(done));
  }

  // Splits `all` into per-key views by `lens` (even split when empty).
  int SendSplit(const std::vector<Key>& keys, const Buffer& all, const std::vector<int>& lens,
                uint32_t flags, bool advance, KVClient::Completion done,
                std::vector<Buffer> dests = {}) {
    size_t total = all.size() / sizeof(Val);
    if (all.size() % sizeof(Val) != 0 || keys.empty()) {
      return client_.Reject(absl::InvalidArgumentError("values are not whole elements"),
                            std::move(done));
    }
    std::vector<Buffer> values;
    values.reserve(keys.size());
    if (lens.empty()) {
      if (total % keys.size() != 0) {
        return client_.Reject(absl::InvalidArgumentError(absl::StrFormat(
                                  "%d values do not split evenly over %d keys; pass lens",
                                  total, keys.size())),
                              std::move(done));
      }
      size_t each = total / keys.size() * sizeof(Val);
      for (size_t i = 0; i < keys.size(); ++i) values.push_back(all.Slice(i * each, each));
    } else {
      size_t off = 0;
      bool ok = lens.size() == keys.size();
      for (size_t i = 0; ok && i < keys.size(); ++i) {
        ok = lens[i] >= 0 && off + lens[i] <= total;
        if (ok) values.push_back(all.Slice(off * sizeof(Val), lens[i] * sizeof(Val)));
        off += ok ? lens[i] : 0;
      }
      if (!ok || off != total) {
        return client_.Reject(absl::InvalidArgumentError(absl::StrFormat(
                                  "lens (%d entries) do not cover the %d values of %d keys",
                                  lens.size(), total, keys.size())),
                              std::move(done));
      }
    }
    return Send(keys, std::move(values), flags, advance, std::move(done), std::move(dests));
  }

  static KVClient::Completion Notify(Callback cb) {
    if (!cb) return nullptr;
    return [cb](const absl::Status&, std::vector<Buffer>&) { cb(); };
  }
  static KVClient::Completion Views(std::vector<Buffer>* outs, Callback cb) {
    return [outs, cb](const absl::Status& s, std::vector<Buffer>& values) {
      if (s.ok() && outs) *outs = std::move(values);
      if (cb) cb();
    };
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

  KVClient client_;
  std::mutex mu_;
  absl::flat_hash_map<Key, uint64_t> rounds_;
};

}  // namespace geops
