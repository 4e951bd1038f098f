#include "core/kv/aggregation.h"

#include <algorithm>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "core/kv/dtype_ops.h"

namespace geops {

absl::StatusOr<std::optional<Buffer>> AggregationTable::Add(Key key, uint64_t round, DType dtype,
                                                            const Buffer& value,
                                                            uint64_t contributor) {
  if (!SummableDType(dtype)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "key %d: %s values are widened to float32 before they are summed", key, DTypeName(dtype)));
  }
  KeyState& k = keys_[key];
  if (!k.shaped) {
    k.dtype = dtype;
    k.bytes = value.size();
    k.shaped = true;
  } else if (k.dtype != dtype || k.bytes != value.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "key %d holds %d bytes of %s; a push brought %d bytes of %s", key, k.bytes,
        DTypeName(k.dtype), value.size(), DTypeName(dtype)));
  }
  if (k.latest && round <= k.latest->round) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "key %d: a push for round %d arrived after round %d was complete (a duplicate or a "
        "worker out of step)",
        key, round, k.latest->round));
  }
  // Only the open round and the one after it: a synchronous worker is never
  // further ahead, and keeping pushes for arbitrary future rounds would let
  // one peer make us hold unbounded memory.
  const uint64_t open = (k.latest ? k.latest->round : 0) + 1;
  if (round > open + 1) {
    return absl::OutOfRangeError(absl::StrFormat(
        "key %d: a push for round %d while round %d is open (pushes are accepted for the open "
        "round and the next one only)",
        key, round, open));
  }
  Partial& p = k.partial[round];
  if (contributor != 0) {
    if (std::find(p.contributors.begin(), p.contributors.end(), contributor) !=
        p.contributors.end()) {
      return absl::AlreadyExistsError(absl::StrFormat(
          "key %d round %d: this contributor's push is already counted", key, round));
    }
    p.contributors.push_back(contributor);
  }
  if (p.count == 0) {
    p.sum = value;
  } else {
    AddInto(dtype, p.sum, value);
  }
  ++p.count;
  if (p.count < expected_) return std::optional<Buffer>();
  Buffer total = std::move(p.sum);
  k.partial.erase(round);
  return std::optional<Buffer>(std::move(total));
}

std::optional<Buffer> AggregationTable::PullOrPark(Key key, uint64_t round, Token token) {
  KeyState& k = keys_[key];
  if (k.latest && k.latest->round >= round) return k.latest->value;
  k.parked[round].push_back(token);
  return std::nullopt;
}

std::vector<AggregationTable::Token> AggregationTable::Publish(Key key, uint64_t round,
                                                               DType dtype, Buffer result) {
  KeyState& k = keys_[key];
  if (!k.shaped) {
    k.dtype = dtype;
    k.bytes = result.size();
    k.shaped = true;
  }
  std::vector<Token> ready;
  if (k.latest && k.latest->round > round) return ready;
  k.latest = Published{round, std::move(result)};
  // Every pull for this round or an earlier one is answered by it.
  auto end = k.parked.upper_bound(round);
  for (auto it = k.parked.begin(); it != end; ++it) {
    ready.insert(ready.end(), it->second.begin(), it->second.end());
  }
  k.parked.erase(k.parked.begin(), end);
  return ready;
}

std::optional<AggregationTable::Published> AggregationTable::Latest(Key key) const {
  auto it = keys_.find(key);
  if (it == keys_.end()) return std::nullopt;
  return it->second.latest;
}

std::optional<DType> AggregationTable::DTypeOf(Key key) const {
  auto it = keys_.find(key);
  if (it == keys_.end() || !it->second.shaped) return std::nullopt;
  return it->second.dtype;
}

bool AggregationTable::HasParked(Key key, uint64_t round) const {
  auto it = keys_.find(key);
  if (it == keys_.end()) return false;
  auto p = it->second.parked.find(round);
  return p != it->second.parked.end() && !p->second.empty();
}

size_t AggregationTable::open_rounds() const {
  size_t n = 0;
  for (const auto& [key, k] : keys_) n += k.partial.size();
  return n;
}

}  // namespace geops
