#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <vector>

#include "absl/strings/str_format.h"
#include "bench/cluster_util.h"
#include "bench/kv_bench.h"
#include "bench/percentiles.h"
#include "core/base/config.h"
#include "core/cluster/tier_node.h"
#include "core/kv/kv_worker.h"
#include "core/kv/partition.h"

namespace geops::bench {
namespace {

using Clock = std::chrono::steady_clock;

// Minor page faults of this process so far: memory that is not reused shows
// up here, at 256 per MiB of fresh 4 KiB pages.
uint64_t MinorFaults() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<uint64_t>(ru.ru_minflt);
}

class WorkerBench {
 public:
  WorkerBench(const KvWorkload& w, TierNode& tier, KVWorker<float>& kv, bool master, bool trains,
              bool rdma)
      : w_(w), tier_(tier), kv_(kv), master_(master), trains_(trains), rdma_(rdma) {}

  absl::Status Run() {
    servers_ = static_cast<int>(tier_.Members(Role::kServer).size());
    for (const auto& n : tier_.Members(Role::kWorker)) trainers_ += n.trains;
    keys_ = w_.keys_per_server * servers_;
    if (master_) {
      if (auto s = Init(); !s.ok()) return s;
    }
    if (!trains_) {
      std::printf("geops-bench-kv-worker rank=%d master=1 trained=0\n", tier_.my_rank());
      std::fflush(stdout);
      return absl::OkStatus();
    }
    // Nobody measures before the initial values exist (pulls would wait).
    if (auto s = tier_.Barrier(group::kWorkers); !s.ok()) return s;
    for (size_t i = 0; i < w_.value_bytes.size(); ++i) {
      if (auto s = MeasureSize(i); !s.ok()) return s;
      // Sizes do not overlap: each one's numbers are its own.
      if (auto s = tier_.Barrier(group::kWorkers); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

 private:
  // Keys of size step `s`, strictly increasing and spread over all servers.
  // Each size has its own keys: a key's value size is fixed once pushed.
  std::vector<Key> KeysOf(size_t s) const {
    const uint64_t steps = w_.value_bytes.size();
    std::vector<Key> keys;
    for (int k = 0; k < keys_; ++k) keys.push_back(SpreadKey(k * steps + s, keys_ * steps));
    return keys;
  }

  absl::Status Init() {
    for (size_t s = 0; s < w_.value_bytes.size(); ++s) {
      std::vector<float> zeros(w_.value_bytes[s] / sizeof(float));
      std::vector<int> ts;
      for (Key k : KeysOf(s)) ts.push_back(kv_.Init({k}, zeros));
      for (int t : ts) {
        if (auto st = kv_.Wait(t); !st.ok()) return st;
      }
    }
    return absl::OkStatus();
  }

  absl::Status MeasureSize(size_t step) {
    const uint64_t bytes = w_.value_bytes[step];
    const std::vector<Key> all = KeysOf(step);
    std::vector<std::vector<Key>> keys;
    for (Key k : all) keys.push_back({k});
    // Allocated and registered once per size and pushed as views: nothing
    // is copied, allocated or registered per request on this side. Where
    // the transport lands data in place (rdma), pulls land in registered
    // destinations too, as a training worker's do.
    Buffer values = Buffer::Allocate(bytes * keys_);
    if (auto s = kv_.Register(values); !s.ok()) return s;
    const bool in_place = rdma_ && w_.mode != KvMode::kPush;
    Buffer dest_all;
    if (in_place) {
      dest_all = Buffer::Allocate(bytes * keys_);
      if (auto s = kv_.Register(dest_all); !s.ok()) return s;
    }
    std::vector<std::vector<Buffer>> outs(keys_);
    std::vector<Clock::time_point> start(keys_), done(keys_);
    std::vector<int> ts(keys_);
    std::vector<double> latencies_us;

    auto iteration = [&](bool record) -> absl::Status {
      for (int k = 0; k < keys_; ++k) {
        Buffer v = values.Slice(k * bytes, bytes);
        auto cb = [&done, k] { done[k] = Clock::now(); };
        start[k] = Clock::now();
        Buffer d = in_place ? dest_all.Slice(k * bytes, bytes) : Buffer();
        switch (w_.mode) {
          case KvMode::kPush: ts[k] = kv_.ZPush(keys[k], v, {}, cb); break;
          case KvMode::kPull:
            ts[k] = in_place ? kv_.ZPullInto(keys[k], {d}, cb) : kv_.ZPull(keys[k], &outs[k], cb);
            break;
          case KvMode::kPushPull:
            ts[k] = in_place ? kv_.ZPushPullInto(keys[k], v, {d}, {}, cb)
                             : kv_.ZPushPull(keys[k], v, &outs[k], {}, cb);
            break;
        }
        if (in_place) outs[k] = {d};
      }
      absl::Status first;
      for (int k = 0; k < keys_; ++k) first.Update(kv_.Wait(ts[k]));
      if (!first.ok()) return first;
      for (int k = 0; k < keys_; ++k) {
        if (w_.mode != KvMode::kPush && (outs[k].size() != 1 || outs[k][0].size() != bytes)) {
          return absl::DataLossError(absl::StrFormat(
              "key %d: pulled %d values of %d bytes, expected one of %d", keys[k][0],
              outs[k].size(), outs[k].empty() ? 0 : outs[k][0].size(), bytes));
        }
        outs[k].clear();  // hands the receive buffers back now
        if (record) {
          latencies_us.push_back(
              std::chrono::duration<double, std::micro>(done[k] - start[k]).count());
        }
      }
      // Push-only rounds complete without anyone waiting for them; keep the
      // workers in step so that open rounds (and server memory) stay bounded.
      if (w_.mode == KvMode::kPush && trainers_ > 1) return tier_.Barrier(group::kWorkers);
      return absl::OkStatus();
    };

    // Untimed: connection warm-up, first-touch of every buffer on both sides.
    if (auto s = iteration(false); !s.ok()) return s;
    if (auto s = tier_.Barrier(group::kWorkers); !s.ok()) return s;
    const int64_t iters = Iterations(w_, bytes, servers_);
    const uint64_t faults0 = MinorFaults();
    const uint64_t registrations_before = tier_.stats().registrations.load();
    Clock::time_point t0 = Clock::now();
    for (int64_t i = 0; i < iters; ++i) {
      if (auto s = iteration(true); !s.ok()) return s;
    }
    double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    // Memory registrations (rdma) in all, and during the timed rounds.
    const uint64_t registrations = tier_.stats().registrations.load();
    const uint64_t steady_registrations = registrations - registrations_before;
    uint64_t moved = bytes * keys_ * iters;
    const double faults_per_mib =
        static_cast<double>(MinorFaults() - faults0) / (static_cast<double>(moved) / (1 << 20));
    Percentiles p = Summarize(std::move(latencies_us));
    std::printf("geops-bench-kv-worker rank=%d mode=%s value_bytes=%llu keys=%d iters=%lld "
                "seconds=%.6f bytes=%llu gbps=%.4f p50_us=%.1f p99_us=%.1f copied_bytes=%llu "
                "staged_bytes=%llu faults_per_mib=%.2f registrations=%llu steady_registrations=%llu\n",
                tier_.my_rank(), KvModeName(w_.mode), static_cast<unsigned long long>(bytes),
                keys_, static_cast<long long>(iters), seconds,
                static_cast<unsigned long long>(moved), moved * 8.0 / seconds / 1e9, p.p50, p.p99,
                static_cast<unsigned long long>(tier_.stats().bytes_copied.load()),
                static_cast<unsigned long long>(tier_.stats().bytes_staged.load()), faults_per_mib,
                static_cast<unsigned long long>(registrations),
                static_cast<unsigned long long>(steady_registrations));
    std::fflush(stdout);
    return absl::OkStatus();
  }

  const KvWorkload& w_;
  TierNode& tier_;
  KVWorker<float>& kv_;
  const bool master_;
  const bool trains_;
  const bool rdma_;  // the worker's tier runs rdma: pulls land in place
  int servers_ = 0;
  int trainers_ = 0;
  int keys_ = 0;
};

}  // namespace

absl::Status RunKvWorker(const KvWorkload& w) {
  return RunBenchWorker(
      "without --local or --geomx, geops-bench-kv is a worker: set DMLC_ROLE=worker and the "
      "rest of the DMLC_* environment (see geops --help)",
      [&](const Config& c, TierNode& tier, KVWorker<float>& kv, bool trains) {
        return WorkerBench(w, tier, kv, c.master_worker, trains, c.local_van == VanType::kRdma)
            .Run();
      });
}

}  // namespace geops::bench
