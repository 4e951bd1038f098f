// The per-key synchronous aggregation state machine shared by both server
// tiers. For every key it sums exactly `expected` contributions per round,
// keeps the latest published result, and parks pulls until the result of
// the round they ask for exists. It knows nothing of networks or rules:
// callers decide what a complete round turns into (a forward to the global
// tier, or an update-rule application) and publish the outcome.
//
// Not thread-safe; the owning server serialises calls.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "core/base/buffer.h"
#include "core/wire/message.h"

namespace geops {

class AggregationTable {
 public:
  using Token = uint64_t;  // identifies a parked pull to its owner

  explicit AggregationTable(int expected) : expected_(expected) {}

  void set_expected(int expected) { expected_ = expected; }
  int expected() const { return expected_; }

  // Adds one contribution to (key, round). The table takes the value's
  // bytes: the first contribution of a round becomes the accumulator and
  // later ones are added into it, so a round costs no copy (the value is a
  // receive buffer the server owns, aligned or not). Returns the round's
  // total when this was the last expected contribution, nullopt while more
  // are due. Rejects a dtype or size that differs from the key's first
  // value, rounds already published, and rounds more than one beyond the
  // open one (so held memory is bounded by two rounds per key).
  //
  // `contributor` names who pushed (0: anonymous): a second push of the
  // same contributor to an open round is refused with AlreadyExists and
  // counts nothing, so a resent request cannot be summed twice.
  absl::StatusOr<std::optional<Buffer>> Add(Key key, uint64_t round, DType dtype,
                                            const Buffer& value, uint64_t contributor = 0);

  // The latest result when it is from `round` or later; otherwise parks
  // `token` until Publish reaches `round`.
  std::optional<Buffer> PullOrPark(Key key, uint64_t round, Token token);

  // Records `result` as the key's value for `round` (ignored when a later
  // round is already published) and returns the tokens it answers.
  std::vector<Token> Publish(Key key, uint64_t round, DType dtype, Buffer result);

  // The latest published (round, value) of a key.
  struct Published {
    uint64_t round = 0;
    Buffer value;
  };
  std::optional<Published> Latest(Key key) const;
  // Calls f(key, dtype, published) for every key with a published value
  // (a checkpoint's snapshot: the values are shared, not copied).
  template <typename F>
  void ForEachLatest(F&& f) const {
    for (const auto& [key, k] : keys_) {
      if (k.latest) f(key, k.dtype, *k.latest);
    }
  }
  std::optional<DType> DTypeOf(Key key) const;

  // Parked pulls for rounds beyond the latest result: a server forwards
  // such a pull only once per (key, round).
  bool HasParked(Key key, uint64_t round) const;
  size_t open_rounds() const;

 private:
  struct Partial {
    Buffer sum;
    int count = 0;
    std::vector<uint64_t> contributors;  // at most `expected`, so a scan is cheap
  };
  struct KeyState {
    DType dtype = DType::kNone;
    size_t bytes = 0;
    bool shaped = false;
    std::optional<Published> latest;
    std::map<uint64_t, Partial> partial;                   // by round
    std::map<uint64_t, std::vector<Token>> parked;         // by round
  };

  int expected_;
  absl::flat_hash_map<Key, KeyState> keys_;
};

}  // namespace geops
