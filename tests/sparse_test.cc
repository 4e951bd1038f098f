// The WAN's compressed values (core/kv/sparse.h): top-k picks the largest
// magnitudes with exact indices at any tensor size, error feedback loses
// nothing (sent + residual == what was to be sent, bit for bit, round after
// round), and a malformed container is refused without touching anything.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <tuple>

#include "core/kv/half.h"
#include "core/kv/sparse.h"

using namespace geops;

namespace {

Buffer Floats(const std::vector<float>& v) { return Buffer::CopyOf(v.data(), v.size() * 4); }
std::vector<float> ToVector(const Buffer& b) {
  std::vector<float> v(b.size() / 4);
  std::memcpy(v.data(), b.data(), b.size());
  return v;
}
std::vector<float> Decoded(const Buffer& wire, size_t n) {
  Buffer out = Buffer::Allocate(n * 4);
  REQUIRE(DecodeSparse(wire, out).ok());
  return ToVector(out);
}
bool SameBits(float a, float b) { return std::memcmp(&a, &b, 4) == 0; }

std::vector<float> Gradient(std::mt19937& rng, size_t n) {
  // Heavy-tailed, as gradients are: a few large entries, many small.
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = g(rng) * g(rng) * g(rng);
  return v;
}

}  // namespace

TEST_CASE("top-k keeps exactly k entries, the largest magnitudes, indices increasing", "[sparse]") {
  std::mt19937 rng(7);
  for (double density : {0.001, 0.01, 0.1, 1.0}) {
    for (size_t n : {size_t{1}, size_t{999}, size_t{100000}}) {
      INFO("density " << density << " n " << n);
      std::vector<float> v = Gradient(rng, n);
      ErrorFeedback ef(density, DType::kFloat32);
      Buffer wire = ef.Compress(1, Floats(v), false);
      auto info = InspectSparse(wire);
      REQUIRE(info.ok());
      const uint64_t k = TopKCount(n, density);
      REQUIRE(k >= 1);
      REQUIRE(k == std::min<uint64_t>(n, static_cast<uint64_t>(std::ceil(n * density))));
      REQUIRE(info->entries == k);
      REQUIRE(info->topk == (k < n));
      // Header + 4-byte indices + float32 values, nothing else.
      REQUIRE(wire.size() == kSparseHeaderBytes + k * (info->topk ? 8 : 4));
      std::vector<float> got = Decoded(wire, n);
      // Every sent entry is larger in magnitude than every entry left out.
      float smallest_sent = std::numeric_limits<float>::infinity(), largest_left = 0;
      uint64_t sent = 0;
      for (size_t i = 0; i < n; ++i) {
        if (got[i] != 0 || (k == n)) {
          ++sent;
          REQUIRE(SameBits(got[i], v[i]));
          smallest_sent = std::min(smallest_sent, std::fabs(v[i]));
        } else {
          largest_left = std::max(largest_left, std::fabs(v[i]));
        }
      }
      REQUIRE(sent == k);
      REQUIRE(largest_left <= smallest_sent);
    }
  }
}

TEST_CASE("error feedback: sent + residual equals value + previous residual, bit for bit",
          "[sparse]") {
  std::mt19937 rng(11);
  for (DType vd : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    for (double density : {0.001, 0.01, 1.0}) {
      INFO(DTypeName(vd) << " density " << density);
      const size_t n = 20000;
      ErrorFeedback ef(density, vd);
      std::vector<float> before(n, 0.0f);
      double residual_norm = 0;
      for (int round = 0; round < 50; ++round) {
        std::vector<float> v = Gradient(rng, n);
        // Now and then values fp16 cannot hold: they must go as float32.
        if (round % 7 == 3) v[round] = 1e6f * (round % 2 ? 1 : -1);
        Buffer wire = ef.Compress(42, Floats(v), false);
        std::vector<float> sent = Decoded(wire, n);
        const std::vector<float>& after = ef.Residual(42);
        REQUIRE(after.size() == n);
        for (size_t i = 0; i < n; ++i) {
          const float to_send = v[i] + before[i];
          if (!SameBits(sent[i] + after[i], to_send)) {
            FAIL("round " << round << " element " << i << ": sent " << sent[i] << " + residual "
                          << after[i] << " != " << to_send);
          }
          if (!std::isfinite(after[i])) FAIL("element " << i << ": residual " << after[i]);
        }
        before = after;
        residual_norm = 0;
        for (float r : after) residual_norm += double(r) * r;
      }
      // Dense float32 carries everything: nothing is left behind.
      if (density == 1.0 && vd == DType::kFloat32) REQUIRE(residual_norm == 0);
      if (density < 1.0) REQUIRE(residual_norm > 0);
    }
  }
}

TEST_CASE("top-k with fp16 values and 16-bit rounding in the residual", "[sparse]") {
  ErrorFeedback ef(0.5, DType::kFloat16);
  std::vector<float> v = {0.1f, -3.0f, 0.001f, 2.5f};
  Buffer wire = ef.Compress(5, Floats(v), false);
  auto info = InspectSparse(wire);
  REQUIRE(info.ok());
  REQUIRE(info->value_dtype == DType::kFloat16);
  REQUIRE(info->entries == 2);
  // 2 indices (u32) + 2 values (u16).
  REQUIRE(wire.size() == kSparseHeaderBytes + 2 * 4 + 2 * 2);
  std::vector<float> got = Decoded(wire, 4);
  REQUIRE(got[0] == 0.0f);
  REQUIRE(got[1] == -3.0f);
  REQUIRE(got[2] == 0.0f);
  REQUIRE(got[3] == 2.5f);
  const auto& r = ef.Residual(5);
  REQUIRE(SameBits(r[0], 0.1f));
  REQUIRE(SameBits(r[2], 0.001f));
  REQUIRE(r[1] == 0.0f);
  // Next round: the residual is added first, so 0.1 + 0.1 now leads.
  Buffer w2 = ef.Compress(5, Floats({0.1f, 0.0f, 0.0f, 0.0f}), false);
  std::vector<float> got2 = Decoded(w2, 4);
  REQUIRE(got2[0] == HalfToFloat(FloatToHalf(0.2f)));
  REQUIRE(ef.Residual(5)[0] == 0.2f - HalfToFloat(FloatToHalf(0.2f)));
}

TEST_CASE("top-k indices are exact beyond 2^24 elements", "[sparse]") {
  // float32 holds integers exactly only up to 2^24: indices stored as
  // floats (as GeoMX does) would lose these.
  const size_t n = (size_t{1} << 24) + 4099;
  Buffer dense = Buffer::Allocate(n * 4);  // zero-filled
  const std::vector<size_t> at = {3, (size_t{1} << 24) + 1, (size_t{1} << 24) + 3, n - 1};
  for (size_t j = 0; j < at.size(); ++j) {
    float v = 1.0f + static_cast<float>(j);
    std::memcpy(dense.data() + at[j] * 4, &v, 4);
  }
  ErrorFeedback ef(4.0 / static_cast<double>(n), DType::kFloat32);
  Buffer wire = ef.Compress(9, dense, false);
  auto info = InspectSparse(wire);
  REQUIRE(info.ok());
  REQUIRE(info->entries == 4);
  Buffer out = Buffer::Allocate(n * 4);
  REQUIRE(DecodeSparse(wire, out).ok());
  for (size_t j = 0; j < at.size(); ++j) {
    float v;
    std::memcpy(&v, out.data() + at[j] * 4, 4);
    REQUIRE(v == 1.0f + static_cast<float>(j));
  }
  std::vector<float> all = ToVector(out);
  size_t nonzero = 0;
  for (float v : all) nonzero += v != 0;
  REQUIRE(nonzero == 4);
}

TEST_CASE("an accumulate container adds to the previous value, a value container replaces it",
          "[sparse]") {
  Buffer prev = Floats({1, 2, 3, 4});
  ErrorFeedback ef(0.5, DType::kFloat32);
  Buffer delta = ef.Compress(1, Floats({0, 10, 0, -20}), /*accumulate=*/true);
  REQUIRE(InspectSparse(delta)->accumulate);
  REQUIRE(DecodeSparse(delta, prev).ok());
  REQUIRE(ToVector(prev) == std::vector<float>{1, 12, 3, -16});
  Buffer whole = EncodeDense(Floats({5, 6, 7, 8}), DType::kBFloat16, false);
  REQUIRE(DecodeSparse(whole, prev).ok());
  REQUIRE(ToVector(prev) == std::vector<float>{5, 6, 7, 8});
}

TEST_CASE("malformed containers are refused and change nothing", "[sparse]") {
  ErrorFeedback ef(0.25, DType::kFloat32);
  std::vector<float> v(64);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i % 5) - 2.0f;
  const Buffer good = ef.Compress(3, Floats(v), false);
  auto with = [&](size_t off, const void* bytes, size_t len) {
    Buffer b = Buffer::CopyOf(good.data(), good.size());
    std::memcpy(b.data() + off, bytes, len);
    return b;
  };
  const uint64_t huge = ~uint64_t{0};
  const uint32_t backwards = 0, out_of_range = 64;
  const uint8_t bad_dtype = 2, bad_form = 7, bad_bits = 0x80;
  std::vector<std::pair<const char*, Buffer>> bad = {
      {"truncated", good.Slice(0, good.size() - 1)},
      {"header only part", good.Slice(0, 10)},
      {"bad magic", with(0, "XXXX", 4)},
      {"float64 values", with(6, &bad_dtype, 1)},
      {"unknown form", with(5, &bad_form, 1)},
      {"unknown bits", with(7, &bad_bits, 1)},
      {"entries overflow", with(16, &huge, 8)},
      {"elements differ", with(8, &huge, 8)},
      {"index out of range", with(kSparseHeaderBytes + 4 * 15, &out_of_range, 4)},
      {"indices not increasing", with(kSparseHeaderBytes + 4 * 5, &backwards, 4)},
  };
  for (auto& [what, b] : bad) {
    INFO(what);
    Buffer dense = Floats(std::vector<float>(64, 9.0f));
    absl::Status s = DecodeSparse(b, dense);
    REQUIRE_FALSE(s.ok());
    REQUIRE(s.message().find("malformed compressed value") != std::string::npos);
    REQUIRE(ToVector(dense) == std::vector<float>(64, 9.0f));
  }
  // The wrong number of elements for the key.
  Buffer small = Buffer::Allocate(32 * 4);
  REQUIRE_FALSE(DecodeSparse(good, small).ok());
}

TEST_CASE("a value 16 bits would turn into infinity sends its key's entries as float32",
          "[sparse]") {
  for (auto [vd, fits, overflows] :
       {std::tuple{DType::kFloat16, 65519.0f, 65520.0f},
        std::tuple{DType::kBFloat16, std::nextafter(BitsFloat(0x7F7F8000u), 0.0f), BitsFloat(0x7F7F8000u)}}) {
    for (double density : {0.5, 1.0}) {
      INFO(DTypeName(vd) << " density " << density);
      ErrorFeedback ok(density, vd), big(density, vd);
      auto a = InspectSparse(ok.Compress(1, Floats({fits, 1.0f}), false));
      auto b = InspectSparse(big.Compress(1, Floats({-overflows, 1.0f}), false));
      REQUIRE(a->value_dtype == vd);
      REQUIRE(b->value_dtype == DType::kFloat32);
      REQUIRE(big.Residual(1)[0] == 0.0f);
    }
  }
}

TEST_CASE("a container of a zero-element key decodes into nothing", "[sparse]") {
  // Found by the fuzzer: a top-k header with no elements and no entries.
  std::vector<uint8_t> bytes = {'G', 'S', 'P', 'K', 1, 1, 1, 0};
  bytes.resize(kSparseHeaderBytes, 0);
  Buffer wire = Buffer::CopyOf(bytes.data(), bytes.size());
  REQUIRE(InspectSparse(wire).ok());
  REQUIRE(DecodeSparse(wire, Buffer()).ok());
  REQUIRE(DecodeSparse(EncodeDense(Buffer(), DType::kFloat16, false), Buffer()).ok());
}
