// One worker of geops-bench-geo. See geo_bench.h.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/cluster_util.h"
#include "bench/geo_bench.h"
#include "bench/geo_models.h"
#include "core/base/config.h"
#include "core/cluster/tier_node.h"
#include "core/kv/kv_worker.h"
#include "core/kv/partition.h"
#include "core/node/wan_policy.h"
#include "roles/trainer.h"

namespace geops::bench {
namespace {

using Clock = std::chrono::steady_clock;

// The sum of NAME over the servers' STATS answers.
uint64_t SumField(const std::vector<Buffer>& answers, absl::string_view name) {
  uint64_t sum = 0;
  for (const Buffer& b : answers) {
    for (absl::string_view f : absl::StrSplit(DecodeText(b), ' ')) {
      uint64_t v = 0;
      if (absl::ConsumePrefix(&f, name) && absl::ConsumePrefix(&f, "=") && absl::SimpleAtoi(f, &v)) {
        sum += v;
      }
    }
  }
  return sum;
}

class GeoWorker {
 public:
  GeoWorker(const GeoWorkload& w, const Config& c, TierNode& tier, KVWorker<float>& kv)
      : w_(w), c_(c), tier_(tier), kv_(kv) {}

  absl::Status Run(bool trains) {
    auto m = LookupModel(w_.model, w_.scale);
    if (!m.ok()) return m.status();
    model_ = std::move(*m);
    const size_t n = model_.elems.size();
    for (size_t k = 0; k < n; ++k) {
      keys_.push_back(SpreadKey(k, n));
      offset_.push_back(k == 0 ? 0 : offset_[k - 1] + model_.elems[k - 1]);
      lens_.push_back(static_cast<int>(model_.elems[k]));
    }
    if (c_.master_worker) {
      // MixedSync applies sums to weights (sgd); HFA averages models.
      RuleSpec rule;
      if (c_.wan_mixed) rule = {UpdateRule::kSgd, 0.5, 0};
      if (c_.hfa) rule = {UpdateRule::kAverage, 0, static_cast<uint32_t>(std::max(1, c_.num_all_workers))};
      if (auto s = kv_.Wait(kv_.SetRule(WithWanPolicy(rule, c_))); !s.ok()) return s;
      std::vector<float> init(model_.total_elems());
      ForEach([&](size_t k, int64_t i, int64_t at) { init[at] = static_cast<float>(InitValue(k, i)); });
      if (auto s = kv_.Wait(kv_.Init(keys_, init, lens_)); !s.ok()) return s;
    }
    if (!trains) {
      std::printf("geo-worker party=%d rank=%d trained=0\n", w_.party, tier_.my_rank());
      std::fflush(stdout);
      return absl::OkStatus();
    }
    return Train();
  }

 private:
  template <typename F>
  void ForEach(F&& f) {
    int64_t at = 0;
    for (size_t k = 0; k < model_.elems.size(); ++k) {
      for (int64_t i = 0; i < model_.elems[k]; ++i) f(k, i, at++);
    }
  }

  Buffer Values(const Buffer& all, size_t k) const {
    return all.Slice(offset_[k] * sizeof(float), model_.elems[k] * sizeof(float));
  }

  // Mismatching floats of key k against `want` (bitwise: the sums are of
  // small integers, so every correct result is exact).
  uint64_t Compare(const std::vector<Buffer>& got, size_t k, const Buffer& want) {
    Buffer w = Values(want, k);
    if (got.size() != 1 || got[0].size() != w.size()) return model_.elems[k];
    // A lossy policy (top-k below 100%, MixedSync, HFA's averages) has no
    // exact result to compare with; the sizes still must be right.
    if (!Exact(c_)) return 0;
    checked_ += model_.elems[k];
    if (std::memcmp(got[0].data(), w.data(), w.size()) == 0) return 0;
    uint64_t bad = 0;
    for (int64_t i = 0; i < model_.elems[k]; ++i) {
      bad += std::memcmp(got[0].data() + i * 4, w.data() + i * 4, 4) != 0;
    }
    return bad;
  }

  // The WAN bytes this party's servers have sent and received so far
  // (their global tier's counters), or nothing for a worker that does not
  // measure the WAN.
  absl::Status ProbeWan(uint64_t& up, uint64_t& down, uint64_t& msgs) {
    std::vector<Buffer> answers;
    absl::Status got;
    int ts = kv_.client().QueryStats([&](const absl::Status& s, std::vector<Buffer>& v) {
      got = s;
      answers = std::move(v);
    });
    if (auto s = kv_.Wait(ts); !s.ok()) return s;
    if (!got.ok()) return got;
    up = SumField(answers, "global_sent_bytes");
    down = SumField(answers, "global_recv_bytes");
    msgs = SumField(answers, "global_sent_msgs") + SumField(answers, "global_recv_msgs");
    return absl::OkStatus();
  }

  uint64_t Messages() const {
    return tier_.stats().messages_sent.load() + tier_.stats().messages_received.load();
  }

  absl::Status Train() {
    const size_t n = keys_.size();
    int index = 0, count = 0;
    for (const auto& wk : tier_.Members(Role::kWorker)) {
      if (!wk.trains) continue;
      if (wk.id == tier_.my_id()) index = count;
      ++count;
    }
    const int64_t all = c_.num_all_workers > 0 ? c_.num_all_workers : count;
    // Two rounds' gradients and results, computed once: round r uses set
    // (r - 1) % 2, so a stale result (the previous round's) never passes.
    const size_t bytes = model_.bytes();
    Buffer grads[2] = {Buffer::Allocate(bytes), Buffer::Allocate(bytes)};
    Buffer expect[2] = {Buffer::Allocate(bytes), Buffer::Allocate(bytes)};
    for (int p = 0; p < 2; ++p) {
      float* g = reinterpret_cast<float*>(grads[p].data());
      float* e = reinterpret_cast<float*>(expect[p].data());
      ForEach([&](size_t k, int64_t i, int64_t at) {
        g[at] = static_cast<float>(BaseGradient(p + 1, k, i) + SkewGradient(p + 1, k, i, index, count));
        e[at] = static_cast<float>(all * BaseGradient(p + 1, k, i));
      });
    }

    // Round 0: the master worker's initial values.
    std::vector<std::vector<Buffer>> outs(n);
    {
      std::vector<Buffer> got;
      if (auto s = kv_.Wait(kv_.ZPull(keys_, &got)); !s.ok()) return s;
      Buffer init = Buffer::Allocate(bytes);
      float* v = reinterpret_cast<float*>(init.data());
      ForEach([&](size_t k, int64_t i, int64_t at) { v[at] = static_cast<float>(InitValue(k, i)); });
      for (size_t k = 0; k < n; ++k) {
        std::vector<Buffer> one = {k < got.size() ? got[k] : Buffer()};
        mismatches_ += Compare(one, k, init);
      }
    }

    const bool flat = w_.mode == GeoMode::kFlat;
    // In hier, worker 0 of each training party reads its servers' WAN
    // counters between rounds: nothing of the next round crosses the WAN
    // before this worker pushes it, so each delta is exactly one round's.
    const bool probes = !flat && w_.party != 0 && tier_.my_rank() == 0;
    uint64_t wan_up = 0, wan_down = 0, wan_msgs = 0;
    uint64_t own_sent = tier_.stats().bytes_sent.load(), own_recv = tier_.stats().bytes_received.load();
    uint64_t own_msgs = Messages();
    if (probes) {
      if (auto s = ProbeWan(wan_up, wan_down, wan_msgs); !s.ok()) return s;
    }
    std::vector<int> ts(n);
    const int total = w_.warmup + w_.rounds;
    for (int r = 1; r <= total; ++r) {
      const int p = (r - 1) % 2;
      Clock::time_point t0 = Clock::now(), first = t0;
      std::atomic<int64_t> any_ns{0};  // the first result of all, since t0
      if (w_.per_key) {
        // Backward order: the last layer's gradient is ready first. The
        // first layer's result is what the next forward pass waits for.
        for (size_t j = n; j-- > 0;) {
          ts[j] = kv_.ZPushPull({keys_[j]}, Values(grads[p], j), &outs[j], {}, [&, j] {
            auto now = Clock::now();
            int64_t zero = 0;
            any_ns.compare_exchange_strong(
                zero, std::chrono::duration_cast<std::chrono::nanoseconds>(now - t0).count());
            if (j == 0) first = now;
          });
        }
        absl::Status first;
        for (size_t j = 0; j < n; ++j) first.Update(kv_.Wait(ts[j]));
        if (!first.ok()) return first;
      } else {
        std::vector<Buffer> got;
        if (auto s = kv_.Wait(kv_.ZPushPull(keys_, grads[p], &got, lens_)); !s.ok()) return s;
        for (size_t k = 0; k < n; ++k) outs[k] = {k < got.size() ? got[k] : Buffer()};
        first = Clock::now();
        any_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(first - t0).count();
      }
      const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
      const double first_s = std::chrono::duration<double>(first - t0).count();
      const uint64_t sent = tier_.stats().bytes_sent.load(), recv = tier_.stats().bytes_received.load();
      const uint64_t d_sent = sent - own_sent, d_recv = recv - own_recv;
      own_sent = sent, own_recv = recv;
      const uint64_t msgs_now = Messages(), d_msgs = msgs_now - own_msgs;
      own_msgs = msgs_now;
      uint64_t bad = 0;
      for (size_t k = 0; k < n; ++k) {
        bad += Compare(outs[k], k, expect[p]);
        outs[k].clear();  // the receive buffers go back now
      }
      mismatches_ += bad;
      // Own traffic is LAN, except a flat worker outside the central party:
      // all of its traffic crosses its WAN link.
      uint64_t lan = d_sent + d_recv, up = 0, down = 0, msgs = 0;
      bool carries_wan = false;
      if (flat && w_.party != 0) {
        up = d_sent, down = d_recv, msgs = d_msgs, lan = 0, carries_wan = true;
      } else if (probes) {
        uint64_t u = 0, d = 0, m = 0;
        if (auto s = ProbeWan(u, d, m); !s.ok()) return s;
        up = u - wan_up, down = d - wan_down, msgs = m - wan_msgs;
        wan_up = u, wan_down = d, wan_msgs = m;
        carries_wan = true;
      }
      std::printf("geo-round party=%d rank=%d round=%d timed=%d seconds=%.6f first_key_s=%.6f "
                  "first_result_s=%.6f lan_bytes=%llu "
                  "wan=%d wan_up=%llu wan_down=%llu wan_msgs=%llu mismatches=%llu\n",
                  w_.party, tier_.my_rank(), r, r > w_.warmup ? 1 : 0, seconds, first_s,
                  any_ns.load() / 1e9,
                  static_cast<unsigned long long>(lan), carries_wan ? 1 : 0,
                  static_cast<unsigned long long>(up), static_cast<unsigned long long>(down),
                  static_cast<unsigned long long>(msgs), static_cast<unsigned long long>(bad));
      if (w_.party == 1 && tier_.my_rank() == 0) {
        std::printf("geo-progress round %d/%d%s: %.1f ms, %s\n", r, total,
                    r > w_.warmup ? "" : " (warm-up)", seconds * 1e3,
                    bad == 0 ? "exact" : "MISMATCH");
      }
      std::fflush(stdout);
    }
    std::printf("geo-worker party=%d rank=%d trained=1 rounds=%d values_checked=%llu "
                "mismatches=%llu\n",
                w_.party, tier_.my_rank(), total, static_cast<unsigned long long>(checked_),
                static_cast<unsigned long long>(mismatches_));
    std::fflush(stdout);
    if (mismatches_ != 0) {
      return absl::DataLossError(
          absl::StrFormat("%d values differ from the exact global sum", mismatches_));
    }
    return absl::OkStatus();
  }

  const GeoWorkload& w_;
  const Config& c_;
  TierNode& tier_;
  KVWorker<float>& kv_;
  ModelShape model_;
  std::vector<Key> keys_;
  std::vector<int64_t> offset_;
  std::vector<int> lens_;
  uint64_t checked_ = 0;
  uint64_t mismatches_ = 0;
};

}  // namespace

absl::Status RunGeoWorker(const GeoWorkload& w) {
  return RunBenchWorker(
      "geops-bench-geo runs its own cluster: start it without DMLC_ROLE (see --help)",
      [&](const Config& c, TierNode& tier, KVWorker<float>& kv, bool trains) {
        return GeoWorker(w, c, tier, kv).Run(trains);
      });
}

}  // namespace geops::bench
