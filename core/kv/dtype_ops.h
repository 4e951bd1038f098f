// Element-wise arithmetic on typed byte buffers. Inputs may be unaligned
// (ZeroMQ hands out frames at arbitrary offsets), so elements are loaded
// with memcpy, which compiles to plain unaligned loads on x86.
#pragma once

#include <cstring>
#include <type_traits>

#include "absl/status/status.h"
#include "core/base/buffer.h"
#include "core/wire/message.h"

namespace geops {

// Calls f with a value of d's C++ type. The 16-bit floats have none: they
// are widened to float32 before any arithmetic (core/kv/half.h), and
// callers refuse them (SummableDType) before they get here.
template <typename F>
auto VisitDType(DType d, F&& f) {
  switch (d) {
    case DType::kFloat64: return f(double{});
    case DType::kInt32: return f(int32_t{});
    case DType::kInt64: return f(int64_t{});
    case DType::kFloat32:
    case DType::kFloat16:
    case DType::kBFloat16:
    case DType::kNone: break;
  }
  return f(float{});
}

inline bool SummableDType(DType d) { return d != DType::kFloat16 && d != DType::kBFloat16; }

template <typename T>
T LoadAt(const std::byte* base, size_t i) {
  T v;
  std::memcpy(&v, base + i * sizeof(T), sizeof(T));
  return v;
}
template <typename T>
void StoreAt(std::byte* base, size_t i, T v) {
  std::memcpy(base + i * sizeof(T), &v, sizeof(T));
}

// Integers wrap instead of overflowing into undefined behaviour.
template <typename T>
T WrappingAdd(T a, T b) {
  if constexpr (std::is_integral_v<T>) {
    using U = std::make_unsigned_t<T>;
    return static_cast<T>(static_cast<U>(a) + static_cast<U>(b));
  } else {
    return a + b;
  }
}

// acc += add, element-wise. Sizes must match (checked by the caller).
inline void AddInto(DType d, const Buffer& acc, const Buffer& add) {
  VisitDType(d, [&](auto zero) {
    using T = decltype(zero);
    size_t n = acc.size() / sizeof(T);
    for (size_t i = 0; i < n; ++i) {
      StoreAt<T>(acc.data(), i, WrappingAdd(LoadAt<T>(acc.data(), i), LoadAt<T>(add.data(), i)));
    }
  });
}

// acc -= sub, element-wise, float32 or float64 (the change of a result).
inline void Subtract(DType d, const Buffer& acc, const Buffer& sub) {
  VisitDType(d, [&](auto zero) {
    using T = decltype(zero);
    size_t n = acc.size() / sizeof(T);
    for (size_t i = 0; i < n; ++i) {
      StoreAt<T>(acc.data(), i, static_cast<T>(LoadAt<T>(acc.data(), i) - LoadAt<T>(sub.data(), i)));
    }
  });
}

// v /= n, in place (an average from a sum), divided rather than multiplied
// by 1/n so that an exact average stays exact.
inline absl::Status Divide(DType d, double n, const Buffer& v) {
  if (d != DType::kFloat32 && d != DType::kFloat64) {
    return absl::InvalidArgumentError("averaging needs float32 or float64 values");
  }
  VisitDType(d, [&](auto zero) {
    using T = decltype(zero);
    const T by = static_cast<T>(n);
    size_t count = v.size() / sizeof(T);
    for (size_t i = 0; i < count; ++i) StoreAt<T>(v.data(), i, LoadAt<T>(v.data(), i) / by);
  });
  return absl::OkStatus();
}

// grad := weights - lr * grad, in place in `grad` (which the caller owns).
inline absl::Status ApplySgd(DType d, double lr, const Buffer& weights, const Buffer& grad) {
  if (d != DType::kFloat32 && d != DType::kFloat64) {
    return absl::InvalidArgumentError("the sgd rule needs float32 or float64 values");
  }
  VisitDType(d, [&](auto zero) {
    using T = decltype(zero);
    const T rate = static_cast<T>(lr);
    size_t n = grad.size() / sizeof(T);
    for (size_t i = 0; i < n; ++i) {
      StoreAt<T>(grad.data(), i, LoadAt<T>(weights.data(), i) - rate * LoadAt<T>(grad.data(), i));
    }
  });
  return absl::OkStatus();
}

}  // namespace geops
