#include "train/learner.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "core/base/log.h"
#include "core/cluster/tier_node.h"
#include "core/kv/kv_worker.h"
#include "core/kv/partition.h"
#include "core/node/report.h"
#include "core/node/wan_policy.h"
#include "core/node/worker_node.h"

namespace geops::train {
namespace {

using env::Bad;

// splitmix64: the same shuffles on every machine.
uint64_t Mix(uint64_t& s) {
  uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
void Shuffle(std::vector<int>& v, uint64_t seed) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[Mix(seed) % i]);
}

Dataset Head(Dataset d, int n) {
  if (n <= 0 || n >= d.n) return d;
  d.n = n;
  d.x.resize(static_cast<size_t>(n) * d.dim);
  d.y.resize(n);
  return d;
}

class Learner {
 public:
  Learner(const Config& c, const LearnOptions& o) : c_(c), o_(o) {}

  absl::Status Run() {
    return RunWorker<float>(c_, [this](TierNode& tier, KVWorker<float>& kv, bool trains) {
      tier_ = &tier;
      kv_ = &kv;
      return Train(trains);
    });
  }


 private:
  absl::Status Train(bool trains) {
    const std::vector<int> layout = ParamLayout(o_.model);
    for (size_t k = 0; k < layout.size(); ++k) keys_.push_back(SpreadKey(k, layout.size()));
    const size_t n = ParamCount(o_.model);
    const int all = c_.num_all_workers > 0 ? c_.num_all_workers : o_.shards;
    const bool hfa = c_.hfa;

    if (c_.master_worker) {
      RuleSpec rule;
      if (hfa) {
        rule.rule = UpdateRule::kAverage;
        rule.average_over = static_cast<uint32_t>(all);
      } else {
        rule.rule = UpdateRule::kSgd;
        rule.learning_rate = o_.lr;
      }
      if (auto s = kv_->Wait(kv_->SetRule(WithWanPolicy(rule, c_))); !s.ok()) return s;
      if (auto s = kv_->Wait(kv_->Init(keys_, InitParams(o_.model, o_.seed), layout)); !s.ok()) {
        return s;
      }
      log::Info("master worker: %s, %d parameters in %d keys, %s", ModelName(o_.model), n,
                keys_.size(),
                hfa ? absl::StrFormat("HFA K1=%d K2=%d, averaged over %d workers", c_.hfa_k1,
                                      c_.hfa_k2, all)
                    : absl::StrFormat("sgd lr=%g on the global servers", o_.lr));
    }
    if (!trains) return absl::OkStatus();
    if (!o_.shard_given && all > 1) {
      return absl::InvalidArgumentError(
          "GEOPS_SHARD is not set: expected i/N, this worker's share of the training set "
          "(geops-launch sets it)");
    }

    auto train_set = LoadFashionMnist(o_.data_dir, true);
    if (!train_set.ok()) return train_set.status();
    Dataset whole = Head(std::move(*train_set), o_.train_examples);
    // Every worker takes the same number of steps per epoch: synchronous
    // rounds must match across the cluster.
    const int steps = whole.n / o_.shards / o_.batch;
    if (steps < 1) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%d training examples over %d shards leave no batch of %d", whole.n, o_.shards, o_.batch));
    }
    auto mine = Shard(whole, o_.shard, o_.shards);
    if (!mine.ok()) return mine.status();
    Dataset().x.swap(whole.x);
    Dataset test;
    if (o_.shard == 0) {
      auto t = LoadFashionMnist(o_.data_dir, false);
      if (!t.ok()) return t.status();
      test = Head(std::move(*t), o_.test_examples);
    }

    // Round 0: the master worker's model.
    std::vector<float> params(n);
    if (auto s = PullInto(kv_->ZPull(keys_, &got_), params); !s.ok()) return s;
    std::vector<float> grad(n);
    Buffer push = Buffer::Allocate(n * sizeof(float));
    std::vector<int> order(mine->n);
    std::iota(order.begin(), order.end(), 0);

    const absl::Time start = absl::Now();
    int rounds = 0;
    for (int epoch = 1; epoch <= o_.epochs; ++epoch) {
      Shuffle(order, o_.seed * 1000003 + epoch * 7919 + o_.shard);
      // The step size falls linearly to a tenth by the last epoch, so the
      // final accuracy is a model's, not one noisy step's. The servers' sgd
      // rate is fixed: the gradient carries the factor.
      const double decay =
          o_.lr_decay && o_.epochs > 1 ? 1.0 - 0.9 * (epoch - 1) / (o_.epochs - 1) : 1.0;
      const float lr = static_cast<float>(o_.lr * decay);
      double loss = 0;
      for (int step = 0; step < steps; ++step) {
        loss += LossAndGradient(o_.model, params.data(), *mine, order.data() + step * o_.batch,
                                o_.batch, grad.data());
        float* out = push.as<float>().data();
        if (hfa) {
          // Local sgd; every K1-th step the model goes to be averaged.
          for (size_t i = 0; i < n; ++i) params[i] -= lr * grad[i];
          if ((step + 1) % c_.hfa_k1 != 0) continue;
          std::memcpy(out, params.data(), n * sizeof(float));
        } else {
          // The servers sum; this share makes the sum the cluster's mean.
          const float share = static_cast<float>(decay) / static_cast<float>(all);
          for (size_t i = 0; i < n; ++i) out[i] = grad[i] * share;
        }
        const std::vector<int>& lens = ParamLayout(o_.model);
        if (auto s = PullInto(kv_->ZPushPull(keys_, push, &got_, lens), params); !s.ok()) return s;
        ++rounds;
        if (o_.trace) {
          std::printf("geops-train round=%d\n", rounds);
          std::fflush(stdout);
        }
      }
      const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
      if (o_.shard == 0) {
        const double acc = Accuracy(o_.model, params.data(), test);
        std::printf("geops-train epoch=%d/%d model=%s test_accuracy=%.4f train_loss=%.4f "
                    "rounds=%d seconds=%.3f\n",
                    epoch, o_.epochs, ModelName(o_.model).c_str(), acc, loss / steps, rounds,
                    seconds);
        std::fflush(stdout);
        accuracy_ = acc;
      }
    }
    report::Learner l;
    l.shard = o_.shard;
    l.shards = o_.shards;
    l.epochs = o_.epochs;
    l.steps_per_epoch = steps;
    l.rounds = rounds;
    if (o_.shard == 0) l.test_accuracy = accuracy_;
    l.seconds = absl::ToDoubleSeconds(absl::Now() - start);
    std::printf("%s\n", l.Format().c_str());
    std::fflush(stdout);
    return absl::OkStatus();
  }

  // Waits for `ts` and copies the pulled tensors into `params`.
  absl::Status PullInto(int ts, std::vector<float>& params) {
    if (auto s = kv_->Wait(ts); !s.ok()) return s;
    size_t at = 0;
    for (const Buffer& b : got_) {
      if (at * sizeof(float) + b.size() > params.size() * sizeof(float)) {
        return absl::DataLossError("the servers returned more values than the model has");
      }
      std::memcpy(params.data() + at, b.data(), b.size());
      at += b.size() / sizeof(float);
    }
    got_.clear();
    if (at != params.size()) {
      return absl::DataLossError(absl::StrFormat("the servers returned %d of the model's %d values",
                                                 at, params.size()));
    }
    return absl::OkStatus();
  }

  const Config& c_;
  const LearnOptions& o_;
  KVWorker<float>* kv_ = nullptr;  // RunWorker's, while Train runs
  TierNode* tier_ = nullptr;
  std::vector<Key> keys_;
  std::vector<Buffer> got_;
  double accuracy_ = 0;
};

}  // namespace

absl::StatusOr<std::optional<LearnOptions>> ParseLearnOptions(const EnvLookup& env) {
  auto get = [&](std::string_view name) { return env::Get(env, name); };
  auto model = get("GEOPS_TRAIN");
  if (!model) return std::optional<LearnOptions>();
  LearnOptions o;
  auto m = ParseModel(*model);
  if (!m.ok()) return Bad("GEOPS_TRAIN", *model, "softmax, mlp or mlp:HIDDEN");
  o.model = *m;
  auto integer = [&](std::string_view name, int lo, int hi, int& out) -> absl::Status {
    auto v = env::GetInt(env, name, lo, hi, out);
    if (v.ok()) out = *v;
    return v.status();
  };
  if (auto s = integer("GEOPS_EPOCHS", 1, 10000, o.epochs); !s.ok()) return s;
  if (auto s = integer("GEOPS_BATCH", 1, 60000, o.batch); !s.ok()) return s;
  if (auto s = integer("GEOPS_TRAIN_EXAMPLES", 0, 60000, o.train_examples); !s.ok()) return s;
  if (auto s = integer("GEOPS_TEST_EXAMPLES", 0, 10000, o.test_examples); !s.ok()) return s;
  if (auto v = get("GEOPS_LR")) {
    if (!absl::SimpleAtod(*v, &o.lr) || !(o.lr > 0) || o.lr > 100) {
      return Bad("GEOPS_LR", *v, "a learning rate in (0, 100]");
    }
  }
  if (auto v = get("GEOPS_SEED")) {
    if (!absl::SimpleAtoi(*v, &o.seed)) return Bad("GEOPS_SEED", *v, "an unsigned integer");
  }
  if (auto v = get("GEOPS_DATA_DIR")) o.data_dir = *v;
  if (auto v = get("GEOPS_LR_DECAY")) {
    if (*v != "0" && *v != "1") return Bad("GEOPS_LR_DECAY", *v, "0 or 1");
    o.lr_decay = *v == "1";
  }
  if (auto v = get("GEOPS_TRAIN_TRACE")) {
    if (*v != "0" && *v != "1") return Bad("GEOPS_TRAIN_TRACE", *v, "0 or 1");
    o.trace = *v == "1";
  }
  if (auto v = get("GEOPS_SHARD")) {
    std::vector<std::string> parts = absl::StrSplit(*v, '/');
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &o.shard) ||
        !absl::SimpleAtoi(parts[1], &o.shards) || o.shards < 1 || o.shard < 0 ||
        o.shard >= o.shards) {
      return Bad("GEOPS_SHARD", *v, "i/N with 0 <= i < N (this worker's share of the data)");
    }
    o.shard_given = true;
  }
  return std::optional<LearnOptions>(o);
}

absl::Status RunLearner(const Config& config, const LearnOptions& options) {
  return Learner(config, options).Run();
}

}  // namespace geops::train
