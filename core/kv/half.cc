#include "core/kv/half.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

namespace geops {
namespace {

#if defined(__x86_64__)
// CPUID leaf 1: F16C (ECX bit 29), AVX (bit 28), and the OS saving YMM
// state (OSXSAVE, bit 27, then XCR0 bits 1 and 2).
bool DetectF16C() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return false;
  const unsigned need = (1u << 27) | (1u << 28) | (1u << 29);
  if ((ecx & need) != need) return false;
  unsigned lo = 0, hi = 0;
  __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (lo & 6u) == 6u;
}

bool HaveF16C() {
  // Asked once per process: the CPU does not change under us.
  static const bool have = DetectF16C();
  return have;
}

__attribute__((target("avx,f16c"))) size_t ToHalfF16C(const std::byte* in, std::byte* out,
                                                      size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(reinterpret_cast<const float*>(in + 4 * i));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 2 * i),
                     _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
  }
  return i;
}

__attribute__((target("avx,f16c"))) size_t ToFloatF16C(const std::byte* in, std::byte* out,
                                                       size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + 2 * i));
    _mm256_storeu_ps(reinterpret_cast<float*>(out + 4 * i), _mm256_cvtph_ps(h));
  }
  return i;
}
#endif

}  // namespace

void FloatsToHalf(const std::byte* in, std::byte* out, size_t n) {
  size_t i = 0;
#if defined(__x86_64__)
  if (HaveF16C()) i = ToHalfF16C(in, out, n);
#endif
  for (; i < n; ++i) {
    float f;
    std::memcpy(&f, in + 4 * i, 4);
    const uint16_t h = FloatToHalf(f);
    std::memcpy(out + 2 * i, &h, 2);
  }
}

void HalfsToFloat(const std::byte* in, std::byte* out, size_t n) {
  size_t i = 0;
#if defined(__x86_64__)
  if (HaveF16C()) i = ToFloatF16C(in, out, n);
#endif
  for (; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, in + 2 * i, 2);
    const float f = HalfToFloat(h);
    std::memcpy(out + 4 * i, &f, 4);
  }
}

}  // namespace geops
