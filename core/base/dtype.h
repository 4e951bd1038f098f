// DType: the element types of tensor values. A value type of the lowest
// layer, because the WAN policy (core/base/wan_policy.h) names the 16-bit
// type the WAN carries, and Config holds that policy; the wire header
// (core/wire/message.h) carries it as one byte.
#pragma once

#include <cstddef>
#include <cstdint>

namespace geops {

// kFloat16 / kBFloat16 travel only on the WAN (GEOPS_WAN_DTYPE): a
// receiving server widens them to float32 before it sums (core/kv/half.h).
enum class DType : uint8_t {
  kNone = 0, kFloat32 = 1, kFloat64 = 2, kInt32 = 3, kInt64 = 4, kFloat16 = 5, kBFloat16 = 6
};
bool IsKnownDType(uint8_t d);
size_t DTypeSize(DType d);
const char* DTypeName(DType d);

}  // namespace geops
