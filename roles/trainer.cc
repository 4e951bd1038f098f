#include "roles/trainer.h"

#include <cmath>
#include <cstdio>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "core/base/log.h"
#include "core/cluster/tier_node.h"
#include "core/kv/dtype_ops.h"
#include "core/kv/kv_worker.h"
#include "core/kv/partition.h"
#include "core/node/report.h"
#include "core/node/wan_policy.h"
#include "core/node/worker_node.h"
#include "roles/roles.h"

namespace geops {
namespace {

using env::Bad;

uint64_t Fnv1a(uint64_t h, const Buffer& b) {
  for (size_t i = 0; i < b.size(); ++i) {
    h ^= static_cast<uint8_t>(b.data()[i]);
    h *= 1099511628211ull;
  }
  return h;
}

template <typename T>
class Trainer {
 public:
  Trainer(const Config& c, const TrainerOptions& o) : c_(c), o_(o) {}

  absl::Status Run() {
    return RunWorker<T>(c_, [this](TierNode& tier, KVWorker<T>& kv, bool trains) {
      tier_ = &tier;
      kv_ = &kv;
      return Train(trains);
    });
  }

 private:
  absl::Status Train(bool trains) {
    const size_t nkeys = o_.key_sizes.size();
    for (size_t k = 0; k < nkeys; ++k) keys_.push_back(SpreadKey(k, nkeys));
    size_t total = 0;
    for (int n : o_.key_sizes) total += n;
    bytes_per_round_ = total * sizeof(T);

    if (c_.master_worker) {
      if (auto s = kv_->Wait(kv_->SetRule(WithWanPolicy(o_.rule, c_))); !s.ok()) return s;
      std::vector<T> init(total);
      ForEach([&](size_t k, size_t i, size_t at) { init[at] = static_cast<T>(InitValue(k, i)); });
      if (auto s = kv_->Wait(kv_->Init(keys_, init, o_.key_sizes)); !s.ok()) return s;
      log::Info("master worker: rule %s, %d keys (%d bytes) initialised",
                o_.rule.rule == UpdateRule::kSgd ? "sgd" : "sum", nkeys, bytes_per_round_);
    }
    if (!trains && c_.master_worker) {
      report::Worker w;
      w.rank = tier_->my_rank();
      w.master = true;
      w.keys = nkeys;
      w.init_bytes = bytes_per_round_;
      std::printf("%s\n", w.Format().c_str());
      return absl::OkStatus();
    }

    // Where this worker sits among its tier's trainers, for the skew term.
    // A worker that does not train (a central worker with
    // DMLC_ENABLE_CENTRAL_WORKER=0) still pushes, as GeoMX scripts do; the
    // global servers must ignore it, which the checked sums prove.
    int index = 0, count = 0;
    for (const auto& w : tier_->Members(Role::kWorker)) {
      if (!w.trains) continue;
      if (w.id == tier_->my_id()) index = count;
      ++count;
    }
    if (!trains) index = 0, count = 1;
    const int64_t all = c_.num_all_workers > 0 ? c_.num_all_workers : count;

    // Gradients (two buffers, alternating, so a round never writes what the
    // previous one may still be sending) and, over rdma, one destination per
    // key that the servers write into: all allocated and registered once, so
    // no round registers memory or copies a value in user space. Over tcp
    // the results are read where they arrived (ZPull's views), which keeps
    // that zero-copy path under test too.
    const bool in_place = c_.local_van == VanType::kRdma;
    Buffer grads[2] = {Buffer::Allocate(bytes_per_round_), Buffer::Allocate(bytes_per_round_)};
    std::vector<Buffer> dests;
    for (auto& g : grads) {
      if (auto s = kv_->Register(g); !s.ok()) return s;
    }
    if (in_place) {
      for (int n : o_.key_sizes) {
        dests.push_back(Buffer::Allocate(n * sizeof(T)));
        if (auto s = kv_->Register(dests.back()); !s.ok()) return s;
      }
    }

    // Round 0: everyone starts from the master worker's initial values.
    std::vector<Buffer> got;
    int ts = in_place ? kv_->ZPullInto(keys_, dests) : kv_->ZPull(keys_, &got);
    if (auto s = kv_->Wait(ts); !s.ok()) return s;
    if (in_place) got = dests;
    std::vector<std::vector<T>> expect(nkeys);
    for (size_t k = 0; k < nkeys; ++k) {
      expect[k].resize(o_.key_sizes[k]);
      for (size_t i = 0; i < expect[k].size(); ++i) expect[k][i] = static_cast<T>(InitValue(k, i));
    }
    // A cluster that resumed from a checkpoint (GEOPS_CHECKPOINT_DIR)
    // answers round 0 with the model of the round it was cut at: find that
    // round, and go on from there, every result still checked exactly.
    const int resumed = ResumedRound(got, expect, all);
    if (resumed > 0) {
      log::Info("worker rank %d: the global servers resumed from a checkpoint of round %d; "
                "continuing with round %d of %d",
                tier_->my_rank(), resumed, resumed + 1, o_.rounds);
    }
    Check(0, got, expect);

    absl::Time start = absl::Now();
    int expect_round = resumed;  // the round whose exact result `expect` holds
    for (int r = resumed + 1; r <= o_.rounds; ++r) {
      absl::Time t0 = absl::Now();
      const Buffer& g = grads[r % 2];
      ForEach([&](size_t k, size_t i, size_t at) {
        StoreAt<T>(g.data(), at,
                   static_cast<T>(BaseGradient(r, k, i) + SkewGradient(r, k, i, index, count)));
      });
      int round_ts = in_place ? kv_->ZPushPullInto(keys_, g, dests, o_.key_sizes)
                              : kv_->ZPushPull(keys_, g, &got, o_.key_sizes);
      if (auto s = kv_->Wait(round_ts); !s.ok()) return s;
      while (expect_round < r) Advance(expect, all, ++expect_round);
      if (!trains && !Matches(got, expect)) {
        // Its push holds no round back, so while it lags the others the
        // server answers its pull with a later round's result: exact, but
        // of that round. Never an earlier one.
        auto later = expect;
        for (int r2 = expect_round + 1; r2 <= o_.rounds; ++r2) {
          Advance(later, all, r2);
          if (Matches(got, later)) {
            expect = std::move(later);
            expect_round = r2;
            ++rounds_skipped_;
            break;
          }
        }
      }
      uint64_t before = mismatches_;
      Check(r, got, expect);
      if (r == 1 && mismatches_ > before) {
        if (auto why = ExplainCount(got, all); !why.empty()) return absl::DataLossError(why);
      }
      if (o_.progress) {
        std::printf("round %d/%d: pushed %zu bytes, pulled the %s result of %lld workers in %.1f "
                    "ms, %s\n",
                    r, o_.rounds, bytes_per_round_,
                    o_.rule.rule == UpdateRule::kSgd ? "sgd" : "summed",
                    static_cast<long long>(all), absl::ToDoubleMilliseconds(absl::Now() - t0),
                    mismatches_ == 0 ? "exact" : "MISMATCH");
        std::fflush(stdout);
      }
    }
    uint64_t checksum = 1469598103934665603ull;
    for (const auto& b : got) checksum = Fnv1a(checksum, b);
    double secs = absl::ToDoubleSeconds(absl::Now() - start);
    // trained=1: ran and checked every round; counted=0: its pushes were
    // (rightly) not part of the sums.
    report::Worker w;
    w.rank = tier_->my_rank();
    w.master = c_.master_worker;
    w.trained = true;
    w.counted = trains;
    w.rounds = o_.rounds;
    w.keys = nkeys;
    w.values_checked = checked_;
    w.mismatches = mismatches_;
    w.checksum = checksum;
    w.push_bytes = bytes_per_round_ * o_.rounds;
    w.seconds = secs;
    w.copied_bytes = kv_->client().bytes_copied();
    w.later_results = rounds_skipped_;
    w.resumed_from = resumed;
    std::printf("%s\n", w.Format().c_str());
    std::fflush(stdout);
    if (mismatches_ != 0) {
      return absl::DataLossError(absl::StrFormat("%d values differ from the exact global result",
                                                 mismatches_));
    }
    return absl::OkStatus();
  }

  // 0 when round 0 holds the initial values; else the round r whose exact
  // result it holds (`expect` becomes that result), searched up to the
  // last round of the run; 0 too when none matches (Check then reports it).
  int ResumedRound(const std::vector<Buffer>& got, std::vector<std::vector<T>>& expect,
                   int64_t all) const {
    if (Matches(got, expect)) return 0;
    auto later = expect;
    for (int r = 1; r <= o_.rounds; ++r) {
      Advance(later, all, r);
      if (Matches(got, later)) {
        expect = std::move(later);
        return r;
      }
    }
    return 0;
  }

  // When round 1's first value is an exact multiple of its gradient, the
  // cluster summed a different number of workers than DMLC_NUM_ALL_WORKER
  // says: name the variable, not just the mismatch.
  std::string ExplainCount(const std::vector<Buffer>& got, int64_t all) {
    if (got.empty() || got[0].size() < sizeof(T)) return "";
    double v = static_cast<double>(LoadAt<T>(got[0].data(), 0));
    double sum = o_.rule.rule == UpdateRule::kSgd
                     ? (static_cast<double>(InitValue(0, 0)) - v) / o_.rule.learning_rate
                     : v;
    double workers = sum / static_cast<double>(BaseGradient(1, 0, 0));
    long long n = std::llround(workers);
    if (std::abs(workers - static_cast<double>(n)) > 1e-6 || n <= 0 || n == all) return "";
    return absl::StrFormat(
        "round 1 summed %d workers' gradients but DMLC_NUM_ALL_WORKER=%d (here): it must count "
        "every training worker of the cluster (the central party's only with "
        "DMLC_ENABLE_CENTRAL_WORKER=1)",
        n, all);
  }

  template <typename F>
  void ForEach(F&& f) {
    size_t at = 0;
    for (size_t k = 0; k < o_.key_sizes.size(); ++k) {
      for (int i = 0; i < o_.key_sizes[k]; ++i) f(k, static_cast<size_t>(i), at++);
    }
  }

  // expect: the exact result of round - 1 -> that of round.
  void Advance(std::vector<std::vector<T>>& expect, int64_t all, int round) const {
    for (size_t k = 0; k < expect.size(); ++k) {
      for (size_t i = 0; i < expect[k].size(); ++i) {
        T sum = static_cast<T>(all * BaseGradient(round, k, i));
        expect[k][i] = o_.rule.rule == UpdateRule::kSgd
                           ? static_cast<T>(expect[k][i] -
                                            static_cast<T>(o_.rule.learning_rate) * sum)
                           : sum;
      }
    }
  }

  static bool Matches(const std::vector<Buffer>& got, const std::vector<std::vector<T>>& want) {
    if (got.size() < want.size()) return false;
    for (size_t k = 0; k < want.size(); ++k) {
      if (got[k].size() != want[k].size() * sizeof(T) ||
          std::memcmp(got[k].data(), want[k].data(), got[k].size()) != 0) {
        return false;
      }
    }
    return true;
  }

  void Check(int round, const std::vector<Buffer>& got, const std::vector<std::vector<T>>& want) {
    for (size_t k = 0; k < want.size(); ++k) {
      if (got.size() <= k || got[k].size() != want[k].size() * sizeof(T)) {
        ++mismatches_;
        log::Error("round %d key %d: got %d bytes, want %d", round, k,
                   got.size() <= k ? 0 : got[k].size(), want[k].size() * sizeof(T));
        continue;
      }
      for (size_t i = 0; i < want[k].size(); ++i) {
        ++checked_;
        T v = LoadAt<T>(got[k].data(), i);
        // Bitwise: the sums are of small integers, so they are exact.
        if (std::memcmp(&v, &want[k][i], sizeof(T)) != 0) {
          if (++mismatches_ <= 5) {
            log::Error("round %d key %d element %d: got %s, want %s", round, k, i,
                       absl::StrCat(v), absl::StrCat(want[k][i]));
          }
        }
      }
    }
  }

  const Config& c_;
  const TrainerOptions& o_;
  // RunWorker's, while Train runs.
  KVWorker<T>* kv_ = nullptr;
  TierNode* tier_ = nullptr;
  std::vector<Key> keys_;
  size_t bytes_per_round_ = 0;
  uint64_t checked_ = 0;
  uint64_t mismatches_ = 0;
  uint64_t rounds_skipped_ = 0;  // a worker that does not count saw a later round
};

}  // namespace

absl::StatusOr<TrainerOptions> ParseTrainerOptions(const EnvLookup& env) {
  TrainerOptions o;
  auto get = [&](std::string_view name) { return env::Get(env, name); };
  if (auto v = get("GEOPS_ROUNDS")) {
    if (!absl::SimpleAtoi(*v, &o.rounds) || o.rounds < 0 || o.rounds > 10000000) {
      return Bad("GEOPS_ROUNDS", *v, "an integer in 0..10000000");
    }
  }
  if (auto v = get("GEOPS_KEY_SIZES")) {
    o.key_sizes.clear();
    for (absl::string_view part : absl::StrSplit(*v, ',')) {
      int n = 0;
      if (!absl::SimpleAtoi(part, &n) || n < 1 || n > (1 << 28)) {
        return Bad("GEOPS_KEY_SIZES", *v,
                   "comma-separated element counts, each in 1..268435456");
      }
      o.key_sizes.push_back(n);
    }
  }
  if (auto v = get("GEOPS_DTYPE")) {
    std::string d = absl::AsciiStrToLower(*v);
    if (d == "float32") o.dtype = DType::kFloat32;
    else if (d == "float64") o.dtype = DType::kFloat64;
    else if (d == "int32") o.dtype = DType::kInt32;
    else if (d == "int64") o.dtype = DType::kInt64;
    else return Bad("GEOPS_DTYPE", *v, "float32, float64, int32 or int64");
  }
  if (auto v = get("GEOPS_RULE")) {
    std::string r = absl::AsciiStrToLower(*v);
    if (r == "sum") o.rule.rule = UpdateRule::kSum;
    else if (r == "sgd") o.rule.rule = UpdateRule::kSgd;
    else return Bad("GEOPS_RULE", *v, "sum or sgd");
  }
  o.rule.learning_rate = o.rule.rule == UpdateRule::kSgd ? 0.5 : 0;
  if (auto v = get("GEOPS_LR")) {
    double lr = 0;
    if (!absl::SimpleAtod(*v, &lr) || !(lr > 0) || lr > 1e6) {
      return Bad("GEOPS_LR", *v, "a learning rate > 0");
    }
    if (o.rule.rule == UpdateRule::kSgd) o.rule.learning_rate = lr;
  }
  if (o.rule.rule == UpdateRule::kSgd && o.dtype != DType::kFloat32 &&
      o.dtype != DType::kFloat64) {
    return Bad("GEOPS_DTYPE", DTypeName(o.dtype), "float32 or float64 with GEOPS_RULE=sgd");
  }
  if (auto v = get("GEOPS_PROGRESS")) {
    if (*v != "0" && *v != "1") return Bad("GEOPS_PROGRESS", *v, "0 or 1");
    o.progress = *v == "1";
  }
  return o;
}

absl::Status RunTrainer(const Config& config, const TrainerOptions& options) {
  return VisitDType(options.dtype, [&](auto zero) {
    return Trainer<decltype(zero)>(config, options).Run();
  });
}

}  // namespace geops
