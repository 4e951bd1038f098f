#include "core/kv/sparse.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/str_format.h"
#include "core/kv/dtype_ops.h"
#include "core/kv/half.h"

namespace geops {
namespace {

constexpr uint32_t kMagic = 0x4B505347;  // "GSPK" read little-endian
constexpr uint8_t kVersion = 1;
constexpr uint8_t kFormDense = 0, kFormTopK = 1;
constexpr uint8_t kBitAccumulate = 1;

size_t ValueBytes(DType d) { return d == DType::kFloat32 ? 4 : 2; }
size_t IndexBytes(uint64_t elements) { return elements <= (uint64_t{1} << 32) ? 4 : 8; }

// One float32 as `d` on the wire, and what the receiver reads back.
uint16_t Narrow16(DType d, float v) {
  return d == DType::kFloat16 ? FloatToHalf(v) : FloatToBFloat16(v);
}
float Widen16(DType d, uint16_t h) {
  return d == DType::kFloat16 ? HalfToFloat(h) : BFloat16ToFloat(h);
}
void PutValue(std::byte* at, DType d, float v) {
  if (d == DType::kFloat32) StoreAt<float>(at, 0, v);
  else StoreAt<uint16_t>(at, 0, Narrow16(d, v));
}
float GetValue(const std::byte* at, DType d) {
  return d == DType::kFloat32 ? LoadAt<float>(at, 0) : Widen16(d, LoadAt<uint16_t>(at, 0));
}

Buffer NewContainer(size_t bytes, uint8_t form, DType d, bool accumulate, uint64_t elements,
              uint64_t entries) {
  Buffer b = Buffer::Allocate(bytes);
  std::byte* p = b.data();
  StoreAt<uint32_t>(p, 0, kMagic);
  StoreAt<uint8_t>(p + 4, 0, kVersion);
  StoreAt<uint8_t>(p + 5, 0, form);
  StoreAt<uint8_t>(p + 6, 0, static_cast<uint8_t>(d));
  StoreAt<uint8_t>(p + 7, 0, accumulate ? kBitAccumulate : 0);
  StoreAt<uint64_t>(p + 8, 0, elements);
  StoreAt<uint64_t>(p + 16, 0, entries);
  return b;
}

absl::Status Malformed(const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat("malformed compressed value: ", why));
}

}  // namespace

uint64_t TopKCount(uint64_t n, double density) {
  if (n == 0) return 0;
  const double k = std::ceil(static_cast<double>(n) * density);
  if (!(k >= 1)) return 1;
  return k >= static_cast<double>(n) ? n : static_cast<uint64_t>(k);
}

Buffer EncodeDense(const Buffer& f32, DType value_dtype, bool accumulate) {
  const uint64_t n = f32.size() / sizeof(float);
  const size_t vb = ValueBytes(value_dtype);
  Buffer b = NewContainer(kSparseHeaderBytes + n * vb, kFormDense, value_dtype, accumulate, n, n);
  std::byte* out = b.data() + kSparseHeaderBytes;
  for (uint64_t i = 0; i < n; ++i) PutValue(out + i * vb, value_dtype, LoadAt<float>(f32.data() + 4 * i, 0));
  return b;
}

absl::StatusOr<SparseInfo> InspectSparse(const Buffer& wire) {
  if (wire.size() < kSparseHeaderBytes) return Malformed("shorter than its header");
  const std::byte* p = wire.data();
  if (LoadAt<uint32_t>(p, 0) != kMagic) return Malformed("bad magic");
  if (LoadAt<uint8_t>(p + 4, 0) != kVersion) {
    return Malformed(absl::StrFormat("version %d (this geops reads 1)", LoadAt<uint8_t>(p + 4, 0)));
  }
  const uint8_t form = LoadAt<uint8_t>(p + 5, 0);
  const uint8_t d = LoadAt<uint8_t>(p + 6, 0);
  const uint8_t bits = LoadAt<uint8_t>(p + 7, 0);
  if (form != kFormDense && form != kFormTopK) return Malformed(absl::StrFormat("form %d", form));
  if (d != static_cast<uint8_t>(DType::kFloat32) && d != static_cast<uint8_t>(DType::kFloat16) &&
      d != static_cast<uint8_t>(DType::kBFloat16)) {
    return Malformed(absl::StrFormat("value dtype %d (float32, fp16 or bf16 expected)", d));
  }
  if (bits & ~kBitAccumulate) return Malformed(absl::StrFormat("unknown bits 0x%x", bits));
  SparseInfo info;
  info.topk = form == kFormTopK;
  info.accumulate = bits & kBitAccumulate;
  info.value_dtype = static_cast<DType>(d);
  info.elements = LoadAt<uint64_t>(p + 8, 0);
  info.entries = LoadAt<uint64_t>(p + 16, 0);
  const size_t per = ValueBytes(info.value_dtype) + (info.topk ? IndexBytes(info.elements) : 0);
  const size_t body = wire.size() - kSparseHeaderBytes;
  // Compared by division first: a hostile count must not overflow a product.
  if (info.entries > body / per || info.entries * per != body) {
    return Malformed(absl::StrFormat("%d entries do not fill %d bytes", info.entries, body));
  }
  if (info.entries > info.elements || (!info.topk && info.entries != info.elements)) {
    return Malformed(absl::StrFormat("%d entries for %d elements", info.entries, info.elements));
  }
  return info;
}

absl::Status DecodeSparse(const Buffer& wire, const Buffer& dense) {
  auto info = InspectSparse(wire);
  if (!info.ok()) return info.status();
  const uint64_t n = dense.size() / sizeof(float);
  if (info->elements != n || dense.size() % sizeof(float) != 0) {
    return Malformed(absl::StrFormat("%d elements where the key has %d", info->elements, n));
  }
  const std::byte* body = wire.data() + kSparseHeaderBytes;
  const size_t vb = ValueBytes(info->value_dtype);
  std::byte* out = dense.data();
  if (!info->topk) {
    if (info->value_dtype == DType::kFloat16 && !info->accumulate) {
      HalfsToFloat(body, out, n);
      return absl::OkStatus();
    }
    for (uint64_t i = 0; i < n; ++i) {
      float v = GetValue(body + i * vb, info->value_dtype);
      if (info->accumulate) v += LoadAt<float>(out + 4 * i, 0);
      StoreAt<float>(out + 4 * i, 0, v);
    }
    return absl::OkStatus();
  }
  // Indices first, all of them, so a bad one changes nothing.
  const size_t ib = IndexBytes(n);
  const uint64_t m = info->entries;
  auto index = [&](uint64_t j) {
    return ib == 4 ? uint64_t{LoadAt<uint32_t>(body + j * 4, 0)} : LoadAt<uint64_t>(body + j * 8, 0);
  };
  for (uint64_t j = 0; j < m; ++j) {
    const uint64_t at = index(j);
    if (at >= n || (j > 0 && at <= index(j - 1))) {
      return Malformed(absl::StrFormat("index %d at entry %d (indices increase, below %d)", at, j, n));
    }
  }
  if (!info->accumulate && dense.size() > 0) std::memset(out, 0, dense.size());
  const std::byte* values = body + m * ib;
  for (uint64_t j = 0; j < m; ++j) {
    const uint64_t at = index(j);
    float v = GetValue(values + j * vb, info->value_dtype);
    if (info->accumulate) v += LoadAt<float>(out + 4 * at, 0);
    StoreAt<float>(out + 4 * at, 0, v);
  }
  return absl::OkStatus();
}

Buffer ErrorFeedback::Compress(Key key, const Buffer& f32, bool accumulate) {
  const uint64_t n = f32.size() / sizeof(float);
  std::vector<float>& r = residual_[key];
  if (r.size() != n) r.assign(n, 0.0f);
  const std::byte* in = f32.data();
  const uint64_t k = TopKCount(n, density_);
  // A 16-bit value that would overflow goes as float32 instead: infinity
  // in the residual would poison every later round.
  DType vd = value_dtype_;
  // (Where rounding to nearest even reaches infinity: 65520 for fp16, the
  // midpoint above bfloat16's largest finite value for bf16.)
  auto overflows = [&](float v) {
    const uint32_t a = FloatBits(v) & 0x7FFFFFFFu;
    return a < 0x7F800000u && (vd == DType::kFloat16    ? a >= 0x477FF000u
                               : vd == DType::kBFloat16 ? a >= 0x7F7F8000u
                                                        : false);
  };
  // Writes entry j (value r[i]) and keeps what the receiver will not read.
  auto emit = [&](std::byte* at, uint64_t i) {
    if (vd == DType::kFloat32) {
      StoreAt<float>(at, 0, r[i]);
      r[i] = 0;
    } else {
      const uint16_t h = Narrow16(vd, r[i]);
      StoreAt<uint16_t>(at, 0, h);
      r[i] -= Widen16(vd, h);
    }
  };

  if (k == n) {
    // r becomes what is to be sent: this value plus what earlier rounds kept.
    for (uint64_t i = 0; i < n; ++i) {
      r[i] += LoadAt<float>(in + 4 * i, 0);
      if (overflows(r[i])) vd = DType::kFloat32;
    }
    const size_t vb = ValueBytes(vd);
    Buffer b = NewContainer(kSparseHeaderBytes + n * vb, kFormDense, vd, accumulate, n, n);
    std::byte* out = b.data() + kSparseHeaderBytes;
    if (vd == DType::kFloat16) {
      // In bulk (F16C where there is one), a chunk at a time: encode, read
      // back, keep the rounding.
      float back[1024];
      for (uint64_t i = 0; i < n; i += 1024) {
        const size_t m = std::min<uint64_t>(1024, n - i);
        FloatsToHalf(reinterpret_cast<const std::byte*>(r.data() + i), out + 2 * i, m);
        HalfsToFloat(out + 2 * i, reinterpret_cast<std::byte*>(back), m);
        for (size_t j = 0; j < m; ++j) r[i + j] -= back[j];
      }
      return b;
    }
    for (uint64_t i = 0; i < n; ++i) emit(out + i * vb, i);
    return b;
  }

  // The k largest magnitudes (NaN counts as largest, so it is sent and
  // shows up where it belongs instead of hiding in the residual), ties
  // broken by index. A strided sample first estimates a threshold that
  // about 2k elements pass; one pass then adds this value into r and keeps
  // the indices that pass; the exact k-th magnitude is selected among
  // those. Should fewer than k pass (a skewed sample), every element is a
  // candidate. Either way the result is the exact top-k.
  auto mag = [](float v) { return std::isnan(v) ? std::numeric_limits<float>::infinity() : std::fabs(v); };
  float estimate = 0;
  // About 128 sampled elements above the estimate: enough to keep the
  // candidates near 2k, few enough to cost little next to the pass.
  const uint64_t sample = std::min<uint64_t>(n, std::max<uint64_t>(8192, 64 * (n / k)));
  if (sample < n) {
    std::vector<float> m(sample);
    const uint64_t stride = n / sample;
    for (uint64_t j = 0; j < sample; ++j) {
      const uint64_t i = j * stride;
      m[j] = mag(r[i] + LoadAt<float>(in + 4 * i, 0));
    }
    const uint64_t q = std::min<uint64_t>(sample - 1, (2 * k * sample + n - 1) / n);
    std::nth_element(m.begin(), m.begin() + static_cast<ptrdiff_t>(q), m.end(), std::greater<float>());
    estimate = m[q];
  }
  std::vector<uint64_t> cand;
  cand.reserve(std::min<uint64_t>(n, 4 * k + 64));
  for (uint64_t i = 0; i < n; ++i) {
    r[i] += LoadAt<float>(in + 4 * i, 0);
    if (mag(r[i]) >= estimate) cand.push_back(i);
  }
  if (cand.size() < k) {
    cand.resize(n);
    for (uint64_t i = 0; i < n; ++i) cand[i] = i;
  }
  std::vector<float> m(cand.size());
  for (size_t j = 0; j < cand.size(); ++j) m[j] = mag(r[cand[j]]);
  std::nth_element(m.begin(), m.begin() + static_cast<ptrdiff_t>(k - 1), m.end(), std::greater<float>());
  const float t = m[k - 1];
  uint64_t above = 0;
  for (uint64_t j = 0; j < k; ++j) above += m[j] > t;  // the first k hold every one above t
  std::vector<uint64_t> pick;
  pick.reserve(k);
  uint64_t ties = k - above;
  for (uint64_t i : cand) {  // in index order
    const float a = mag(r[i]);
    if (a > t) {
      pick.push_back(i);
    } else if (a == t && ties > 0) {
      --ties;
      pick.push_back(i);
    }
    if (pick.size() == k) break;
  }
  for (uint64_t i : pick) {
    if (overflows(r[i])) vd = DType::kFloat32;
  }
  const size_t vb = ValueBytes(vd), ib = IndexBytes(n);
  Buffer b = NewContainer(kSparseHeaderBytes + k * (ib + vb), kFormTopK, vd, accumulate, n, k);
  std::byte* idx = b.data() + kSparseHeaderBytes;
  std::byte* val = idx + k * ib;
  for (uint64_t j = 0; j < k; ++j) {
    const uint64_t i = pick[j];
    if (ib == 4) StoreAt<uint32_t>(idx + j * 4, 0, static_cast<uint32_t>(i));
    else StoreAt<uint64_t>(idx + j * 8, 0, i);
    emit(val + j * vb, i);
  }
  return b;
}

const std::vector<float>& ErrorFeedback::Residual(Key key) const {
  static const std::vector<float> kNone;
  auto it = residual_.find(key);
  return it == residual_.end() ? kNone : it->second;
}

}  // namespace geops
