// 16-bit floats for the WAN (core/kv/half.h): exact round trips of every
// 16-bit pattern, round-to-nearest-even at the ties, and the edges
// (overflow, subnormals, NaN).
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/kv/half.h"

using namespace geops;

namespace {
float Pow2(int e) { return std::ldexp(1.0f, e); }
}  // namespace

TEST_CASE("every float16 and bfloat16 value survives float32 and back") {
  for (uint32_t h = 0; h <= 0xFFFF; ++h) {
    const auto b = static_cast<uint16_t>(h);
    float f = HalfToFloat(b);
    if (std::isnan(f)) {
      REQUIRE(std::isnan(HalfToFloat(FloatToHalf(f))));
    } else {
      INFO("half 0x" << std::hex << h);
      REQUIRE(FloatToHalf(f) == b);
    }
    float g = BFloat16ToFloat(b);
    if (std::isnan(g)) {
      REQUIRE(std::isnan(BFloat16ToFloat(FloatToBFloat16(g))));
    } else {
      INFO("bfloat16 0x" << std::hex << h);
      REQUIRE(FloatToBFloat16(g) == b);
    }
  }
}

TEST_CASE("float16: round to nearest, ties to even, and the edges") {
  // Between 1 and 1 + 2^-10: the midpoint goes to the even 1.0, above it up.
  REQUIRE(FloatToHalf(1.0f + Pow2(-11)) == 0x3C00);
  REQUIRE(FloatToHalf(1.0f + Pow2(-11) + Pow2(-20)) == 0x3C01);
  // Between 1 + 2^-10 (odd) and 1 + 2^-9: the midpoint goes up, to even.
  REQUIRE(FloatToHalf(1.0f + 3 * Pow2(-11)) == 0x3C02);
  REQUIRE(FloatToHalf(-1.0f) == 0xBC00);
  // Largest finite 65504; 65519.99 still rounds to it, 65520 to infinity.
  REQUIRE(FloatToHalf(65504.0f) == 0x7BFF);
  REQUIRE(FloatToHalf(65519.0f) == 0x7BFF);
  REQUIRE(FloatToHalf(65520.0f) == 0x7C00);
  REQUIRE(FloatToHalf(1e30f) == 0x7C00);
  REQUIRE(FloatToHalf(-std::numeric_limits<float>::infinity()) == 0xFC00);
  // Subnormals: 2^-24 is the smallest; 2^-25 is a tie and goes to 0 (even).
  REQUIRE(FloatToHalf(Pow2(-24)) == 0x0001);
  REQUIRE(FloatToHalf(Pow2(-25)) == 0x0000);
  REQUIRE(FloatToHalf(1.5f * Pow2(-25)) == 0x0001);
  REQUIRE(FloatToHalf(3 * Pow2(-25)) == 0x0002);  // tie between 1 and 2 units: even
  REQUIRE(FloatToHalf(Pow2(-14) - Pow2(-26)) == 0x0400);  // rounds up into the normals
  REQUIRE(FloatToHalf(1e-30f) == 0x0000);
  REQUIRE(FloatToHalf(-0.0f) == 0x8000);
  REQUIRE(std::isnan(HalfToFloat(FloatToHalf(std::nanf("")))));
  // Small integers are exact: the WAN tier's sums of them stay bit-exact.
  for (int i = -2048; i <= 2048; ++i) REQUIRE(HalfToFloat(FloatToHalf(float(i))) == float(i));
}

TEST_CASE("bfloat16: round to nearest, ties to even, and the edges") {
  REQUIRE(FloatToBFloat16(1.0f + Pow2(-8)) == 0x3F80);             // tie: even
  REQUIRE(FloatToBFloat16(1.0f + Pow2(-8) + Pow2(-20)) == 0x3F81);
  REQUIRE(FloatToBFloat16(1.0f + 3 * Pow2(-8)) == 0x3F82);         // tie: up to even
  REQUIRE(FloatToBFloat16(std::numeric_limits<float>::max()) == 0x7F80);  // rounds to infinity
  REQUIRE(std::isnan(BFloat16ToFloat(FloatToBFloat16(std::nanf("")))));
  for (int i = -256; i <= 256; ++i) REQUIRE(BFloat16ToFloat(FloatToBFloat16(float(i))) == float(i));
}

TEST_CASE("Narrow and Widen convert whole buffers") {
  Buffer f = Buffer::Allocate(5 * 4);
  const float in[5] = {1.0f, -2.5f, 65504.0f, 0.0f, 3.0f};
  std::memcpy(f.data(), in, sizeof(in));
  for (DType d : {DType::kFloat16, DType::kBFloat16}) {
    Buffer n = Narrow(d, f);
    REQUIRE(n.size() == 10);
    Buffer w = Widen(d, n);
    REQUIRE(w.size() == 20);
    float out[5];
    std::memcpy(out, w.data(), sizeof(out));
    REQUIRE(out[0] == 1.0f);
    REQUIRE(out[1] == -2.5f);
    REQUIRE(out[3] == 0.0f);
    REQUIRE(out[4] == 3.0f);
    // 65504 is exact in float16; bfloat16 keeps 8 bits: 65536.
    REQUIRE(out[2] == (d == DType::kFloat16 ? 65504.0f : 65536.0f));
  }
}

namespace {

// An independent reference: the nearest of the (monotonic) positive bit
// patterns by binary search on their values, ties to the even pattern, and
// past the largest finite value the next power of two standing in for
// infinity (so the overflow threshold is the midpoint, as IEEE rounds).
template <typename Widen>
uint16_t Reference(float f, Widen widen, uint16_t max_finite, double beyond) {
  if (std::isnan(f)) return 0;  // callers check NaN separately
  const uint16_t sign = std::signbit(f) ? 0x8000 : 0;
  const double x = std::fabs(static_cast<double>(f));
  auto value = [&](uint32_t b) { return b > max_finite ? beyond : static_cast<double>(widen(b)); };
  uint32_t lo = 0, hi = max_finite + 1u;  // value(lo) <= x < value(hi), or x beyond
  if (x >= beyond) return sign | static_cast<uint16_t>(max_finite + 1);
  while (hi - lo > 1) {
    uint32_t mid = (lo + hi) / 2;
    (value(mid) <= x ? lo : hi) = mid;
  }
  const double below = x - value(lo), above = value(hi) - x;
  uint32_t pick = below < above ? lo : above < below ? hi : (lo % 2 == 0 ? lo : hi);
  return sign | static_cast<uint16_t>(pick);
}

uint16_t HalfReference(float f) {
  return Reference(f, [](uint32_t b) { return HalfToFloat(static_cast<uint16_t>(b)); }, 0x7BFF, 65536.0);
}
uint16_t BFloat16Reference(float f) {
  return Reference(f, [](uint32_t b) { return BFloat16ToFloat(static_cast<uint16_t>(b)); }, 0x7F7F,
                   std::ldexp(1.0, 128));
}

}  // namespace

TEST_CASE("float16 and bfloat16 narrowing agree with a reference on every kind of float32") {
  std::vector<float> probes;
  // A sweep of all float32 bit patterns (every 65,537th: every exponent,
  // both signs, normals, subnormals, infinities and NaNs).
  for (uint64_t b = 0; b <= 0xFFFFFFFFull; b += 65537) probes.push_back(BitsFloat(static_cast<uint32_t>(b)));
  // Every tie between neighbouring 16-bit values, and one float32 ulp
  // either side of it, for both formats.
  for (uint32_t h = 0; h < 0x7C00; ++h) {
    for (float mid : {(HalfToFloat(h) + HalfToFloat(h + 1)) / 2,
                      BFloat16ToFloat(h) / 2 + BFloat16ToFloat(h + 1) / 2}) {
      for (float v : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e38f)}) {
        probes.push_back(v);
        probes.push_back(-v);
      }
    }
  }
  for (float v : {0.0f, -0.0f, 65504.0f, 65519.996f, 65520.0f, std::numeric_limits<float>::max(),
                  std::numeric_limits<float>::denorm_min(), std::numeric_limits<float>::infinity(),
                  -std::numeric_limits<float>::infinity()}) {
    probes.push_back(v);
  }
  size_t checked = 0;
  for (float f : probes) {
    if (std::isnan(f)) {
      REQUIRE(std::isnan(HalfToFloat(FloatToHalf(f))));
      REQUIRE(std::isnan(BFloat16ToFloat(FloatToBFloat16(f))));
      continue;
    }
    const uint16_t h = FloatToHalf(f), b = FloatToBFloat16(f);
    if (h != HalfReference(f)) FAIL("float16 of " << f << " (0x" << std::hex << FloatBits(f) << ")");
    if (b != BFloat16Reference(f)) FAIL("bfloat16 of " << f << " (0x" << std::hex << FloatBits(f) << ")");
#if defined(__FLT16_MAX__)
    // The compiler's own conversion (IEEE round to nearest even).
    const _Float16 c = static_cast<_Float16>(f);
    uint16_t cb;
    std::memcpy(&cb, &c, 2);
    if (h != cb) FAIL("float16 of " << f << ": the compiler says 0x" << std::hex << cb);
#endif
    ++checked;
  }
  REQUIRE(checked > 100000);
}

TEST_CASE("bulk float16 conversion (F16C where present) gives the scalar functions' bits") {
  std::vector<float> in;
  for (uint64_t b = 0; b <= 0xFFFFFFFFull; b += 4099) in.push_back(BitsFloat(static_cast<uint32_t>(b)));
  for (uint32_t h = 0; h < 0x7C00; ++h) {
    float mid = (HalfToFloat(h) + HalfToFloat(h + 1)) / 2;
    in.push_back(mid);
    in.push_back(-mid);
  }
  // Odd lengths and offsets: the vector loop's tail and unaligned input.
  for (size_t offset : {size_t{0}, size_t{1}, size_t{3}}) {
    const size_t n = in.size() - offset;
    std::vector<uint16_t> out(n + 1);
    std::vector<std::byte> raw((n + 1) * 4);
    std::memcpy(raw.data() + 1, in.data() + offset, n * 4);  // misaligned by one byte
    FloatsToHalf(raw.data() + 1, reinterpret_cast<std::byte*>(out.data()), n);
    for (size_t i = 0; i < n; ++i) {
      if (out[i] != FloatToHalf(in[offset + i])) {
        FAIL("bulk float16 of 0x" << std::hex << FloatBits(in[offset + i]) << ": 0x" << out[i]
                                  << ", scalar 0x" << FloatToHalf(in[offset + i]));
      }
    }
  }
  std::vector<uint16_t> all(65536);
  for (uint32_t h = 0; h < 65536; ++h) all[h] = static_cast<uint16_t>(h);
  std::vector<float> wide(65536);
  HalfsToFloat(reinterpret_cast<const std::byte*>(all.data()), reinterpret_cast<std::byte*>(wide.data()), 65536);
  for (uint32_t h = 0; h < 65536; ++h) {
    const float s = HalfToFloat(static_cast<uint16_t>(h));
    if (std::isnan(s)) {
      REQUIRE(std::isnan(wide[h]));
    } else if (FloatBits(wide[h]) != FloatBits(s)) {
      FAIL("bulk widening of 0x" << std::hex << h);
    }
  }
}
