// 16-bit floats for the WAN: IEEE binary16 ("fp16") and bfloat16, converted
// from float32 with round-to-nearest-even, as hardware does, so every
// process narrows a value to the same bits. Sums are never taken in 16 bits:
// a receiver widens to float32 first.
#pragma once

#include <cstdint>
#include <cstring>

#include "core/base/buffer.h"
#include "core/wire/message.h"

namespace geops {

inline bool IsHalf(DType d) { return d == DType::kFloat16 || d == DType::kBFloat16; }

inline uint32_t FloatBits(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof(x));
  return x;
}
inline float BitsFloat(uint32_t x) {
  float f;
  std::memcpy(&f, &x, sizeof(f));
  return f;
}

inline uint16_t FloatToBFloat16(float f) {
  uint32_t x = FloatBits(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((x >> 16) | 0x40);  // quiet NaN
  x += 0x7FFFu + ((x >> 16) & 1u);  // ties to even; overflow carries into infinity
  return static_cast<uint16_t>(x >> 16);
}
inline float BFloat16ToFloat(uint16_t h) { return BitsFloat(static_cast<uint32_t>(h) << 16); }

inline uint16_t FloatToHalf(float f) {
  const uint32_t x = FloatBits(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t a = x & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return sign | 0x7E00u | static_cast<uint16_t>((a >> 13) & 0x1FFu);  // NaN
  if (a >= 0x477FF000u) return sign | 0x7C00u;  // >= 65520 rounds to infinity
  if (a >= 0x38800000u) {                        // a normal half (>= 2^-14)
    uint32_t r = (a - 0x38000000u) >> 13, rest = a & 0x1FFFu;
    if (rest > 0x1000u || (rest == 0x1000u && (r & 1u))) ++r;  // may carry into the exponent
    return sign | static_cast<uint16_t>(r);
  }
  if (a < 0x33000000u) return sign;  // below half the smallest subnormal: zero
  // A subnormal half: the significand with its implicit bit, shifted into
  // units of 2^-24, rounded to nearest even (may round up to 2^-14).
  const uint32_t shift = 126 - (a >> 23);
  const uint32_t m = (a & 0x7FFFFFu) | 0x800000u;
  uint32_t r = m >> shift;
  const uint32_t rest = m & ((1u << shift) - 1), half = 1u << (shift - 1);
  if (rest > half || (rest == half && (r & 1u))) ++r;
  return sign | static_cast<uint16_t>(r);
}

inline float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
  if (e == 0x1F) return BitsFloat(sign | 0x7F800000u | (m << 13));
  if (e != 0) return BitsFloat(sign | ((e + 112) << 23) | (m << 13));
  if (m == 0) return BitsFloat(sign);
  e = 113;  // a subnormal: normalise it
  while (!(m & 0x400u)) m <<= 1, --e;
  return BitsFloat(sign | (e << 23) | ((m & 0x3FFu) << 13));
}

// n float32 values at `in` -> IEEE half at `out`, and back; any alignment.
// F16C instructions where the CPU has them, else the functions above:
// the same bits either way (tested).
void FloatsToHalf(const std::byte* in, std::byte* out, size_t n);
void HalfsToFloat(const std::byte* in, std::byte* out, size_t n);

// Converts `in` (elements of In) into a new Buffer of Out elements.
template <typename In, typename Out, typename F>
Buffer Convert(const Buffer& in, F convert) {
  const size_t n = in.size() / sizeof(In);
  Buffer out = Buffer::Allocate(n * sizeof(Out));
  for (size_t i = 0; i < n; ++i) {
    In v;
    std::memcpy(&v, in.data() + sizeof(In) * i, sizeof(In));
    const Out o = convert(v);
    std::memcpy(out.data() + sizeof(Out) * i, &o, sizeof(Out));
  }
  return out;
}

// float32 values -> `to` (kFloat16 or kBFloat16), in a new Buffer.
inline Buffer Narrow(DType to, const Buffer& f32) {
  if (to == DType::kFloat16) {
    Buffer out = Buffer::Allocate(f32.size() / 2);
    FloatsToHalf(f32.data(), out.data(), f32.size() / 4);
    return out;
  }
  return Convert<float, uint16_t>(f32, FloatToBFloat16);
}

// `from` (kFloat16 or kBFloat16) values -> float32, in a new Buffer.
inline Buffer Widen(DType from, const Buffer& h16) {
  if (from == DType::kFloat16) {
    Buffer out = Buffer::Allocate(h16.size() * 2);
    HalfsToFloat(h16.data(), out.data(), h16.size() / 2);
    return out;
  }
  return Convert<uint16_t, float>(h16, BFloat16ToFloat);
}

}  // namespace geops
