// The built-in synthetic trainer behind DMLC_ROLE=worker. Its gradients are
// small integers whose cluster-wide sum it can predict, so every worker
// checks every value of every round bit for bit.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "core/base/config.h"
#include "core/wire/control.h"
#include "core/wire/message.h"

namespace geops {

struct TrainerOptions {
  int rounds = 10;
  std::vector<int> key_sizes = {262144, 262144, 131072};
  DType dtype = DType::kFloat32;
  RuleSpec rule;
  bool progress = true;
};

absl::StatusOr<TrainerOptions> ParseTrainerOptions(const EnvLookup& env);

// The values every worker can compute: key index k, element i, round r.
inline int64_t InitValue(uint64_t k, uint64_t i) { return static_cast<int64_t>((k * 13 + i) % 7) - 3; }
inline int64_t BaseGradient(uint64_t r, uint64_t k, uint64_t i) {
  return static_cast<int64_t>((r * 7 + k * 3 + i) % 11) + 1;
}
// A per-worker term that sums to zero over a party's trainers, so that a
// lost, doubled or misrouted push shows up in the total.
inline int64_t SkewGradient(uint64_t r, uint64_t k, uint64_t i, int index, int count) {
  int64_t s = static_cast<int64_t>((r + k + i) % 5) - 2;
  return index == 0 ? -(count - 1) * s : s;
}

}  // namespace geops
