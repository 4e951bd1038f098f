// 16-bit floats for the WAN (core/kv/half.h): exact round trips of every
// 16-bit pattern, round-to-nearest-even at the ties, and the edges
// (overflow, subnormals, NaN).
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>

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
