// The WAN's compressed value: a float32 tensor as a self-describing
// container, either every element (dense) or the k of largest magnitude
// with their exact indices (top-k), values in float32, fp16 or bfloat16.
//
// Containers travel on messages flagged msgflag::kSparse. A request so
// flagged is answered in containers too, so the receiver of an answer never
// guesses: each sender picks the encoding of what it sends.
//
// Layout (little-endian, 24-byte header):
//   u32 magic "GSPK" | u8 version 1 | u8 form (0 dense, 1 top-k)
//   u8 value dtype   | u8 bits (bit 0: accumulate, see below)
//   u64 elements of the dense tensor | u64 entries that follow
//   top-k only: `entries` indices, strictly increasing, u32 when the tensor
//   has at most 2^32 elements, else u64 | `entries` values
//
// Accumulate: the values are a change to add to the receiver's previous
// value of the key (a global server's sgd step sent as a sparse delta);
// without it they are the value itself (missing entries are zero).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "core/base/buffer.h"
#include "core/wire/message.h"

namespace geops {

inline constexpr size_t kSparseHeaderBytes = 24;

struct SparseInfo {
  bool topk = false;
  bool accumulate = false;
  DType value_dtype = DType::kFloat32;
  uint64_t elements = 0;
  uint64_t entries = 0;
};

// Every element of `f32` (float32) in `value_dtype` (kFloat32, kFloat16 or
// kBFloat16), as a dense container.
Buffer EncodeDense(const Buffer& f32, DType value_dtype, bool accumulate);

// Reads a container's header and checks that its length, dtype and form
// are consistent; the indices are checked by Decode.
absl::StatusOr<SparseInfo> InspectSparse(const Buffer& wire);

// Decodes `wire` into `dense` (float32, `elements` of them): a value
// container overwrites it (absent entries become 0), an accumulate one is
// added to it. Malformed containers (bad header, indices out of range or
// not increasing, a size other than `dense`'s) are refused untouched.
absl::Status DecodeSparse(const Buffer& wire, const Buffer& dense);

// The number of entries top-k keeps of `n` at `density` (0 < d <= 1).
uint64_t TopKCount(uint64_t n, double density);

// Error feedback, per key: what the encoder could not carry this time (the
// elements top-k left out, and the rounding of 16-bit values) is kept and
// added to the key's next value, so nothing is lost, only delayed.
//
// Invariant, bit for bit: decoded(sent) + residual_after == value +
// residual_before, element-wise in float32 (the left side as one float32
// addition). Values that would overflow the 16-bit type go as float32.
class ErrorFeedback {
 public:
  ErrorFeedback(double density, DType value_dtype) : density_(density), value_dtype_(value_dtype) {}

  double density() const { return density_; }

  // Encodes the top-k of `f32` + the key's residual and keeps the rest.
  Buffer Compress(Key key, const Buffer& f32, bool accumulate);

  // The residual of `key` (empty before its first Compress).
  const std::vector<float>& Residual(Key key) const;

 private:
  double density_;
  DType value_dtype_;
  absl::flat_hash_map<Key, std::vector<float>> residual_;
};

}  // namespace geops
