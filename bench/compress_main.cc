// geops-bench-compress: what the WAN tier's compression costs a core.
// Top-k with error feedback (ErrorFeedback::Compress: residual add, k-th
// magnitude, encode) and its decode (DecodeSparse), on one thread, for
// float32 tensors shaped like gradients; throughput in GB/s of the dense
// float32 input, next to a WAN rate it must keep up with.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/args.h"
#include "bench/percentiles.h"
#include "core/kv/sparse.h"

namespace {

const char kUsage[] = R"(usage: geops-bench-compress [options]

Times the WAN tier's top-k with error feedback on this host, one thread:
compress (add the residual, find the k largest magnitudes, encode them
with exact indices, keep the rest) and decode, per tensor size, density and
value type. Throughput is dense float32 input bytes per second.

  --elements LIST   tensor sizes in elements (default 1000000,25000000)
  --density LIST    fractions sent (default 0.001,0.01,1)
  --values LIST     float32, fp16, bf16 (default float32,fp16)
  --rounds N        timed rounds per setting, after one warm-up (default 5)
  --wan-gbps X      the WAN rate to compare with, Gbit/s (default 10)

Output: one `compress` line per setting, then
  geops-bench-compress compress_gbytes_per_s_min=.. decode_gbytes_per_s_min=..
    wan_gbps=.. wan_gbytes_per_s=.. headroom_min=..
where headroom is how many times faster than the WAN can carry the dense
tensor the slowest compress setting runs (above 1: compression never holds
a round back, one core per party server).
)";

double Seconds(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int Run(int argc, char** argv) {
  using namespace geops;
  using namespace geops::bench;
  std::vector<std::string> argvv(argv + 1, argv + argc);
  auto args = Args::Parse(argvv, {"help"});
  if (!args.ok()) {
    std::fprintf(stderr, "geops-bench-compress: %s\n%s", std::string(args.status().message()).c_str(), kUsage);
    return 2;
  }
  if (args->Has("help")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  auto list = [&](const std::string& name, const std::string& fallback) {
    return std::vector<std::string>(absl::StrSplit(args->Str(name, fallback), ','));
  };
  std::vector<uint64_t> sizes;
  for (const auto& s : list("elements", "1000000,25000000")) {
    uint64_t n = 0;
    if (!absl::SimpleAtoi(s, &n) || n < 1 || n > (uint64_t{1} << 31)) {
      std::fprintf(stderr, "geops-bench-compress: --elements \"%s\": expected 1..2^31\n", s.c_str());
      return 2;
    }
    sizes.push_back(n);
  }
  std::vector<double> densities;
  for (const auto& s : list("density", "0.001,0.01,1")) {
    double d = 0;
    if (!absl::SimpleAtod(s, &d) || !(d > 0) || d > 1) {
      std::fprintf(stderr, "geops-bench-compress: --density \"%s\": expected (0, 1]\n", s.c_str());
      return 2;
    }
    densities.push_back(d);
  }
  std::vector<DType> values;
  for (const auto& s : list("values", "float32,fp16")) {
    if (s == "float32") values.push_back(DType::kFloat32);
    else if (s == "fp16") values.push_back(DType::kFloat16);
    else if (s == "bf16") values.push_back(DType::kBFloat16);
    else {
      std::fprintf(stderr, "geops-bench-compress: --values \"%s\": expected float32, fp16 or bf16\n", s.c_str());
      return 2;
    }
  }
  auto rounds = args->Int("rounds", 5, 1, 1000);
  std::string wan = args->Str("wan-gbps", "10");
  double wan_gbps = 0;
  if (!rounds.ok() || !absl::SimpleAtod(wan, &wan_gbps) || !(wan_gbps > 0)) {
    std::fprintf(stderr, "geops-bench-compress: --rounds 1..1000, --wan-gbps > 0\n");
    return 2;
  }
  if (auto s = args->CheckAllUsed(); !s.ok()) {
    std::fprintf(stderr, "geops-bench-compress: %s\n", std::string(s.message()).c_str());
    return 2;
  }

  double compress_min = INFINITY, decode_min = INFINITY;
  std::mt19937 rng(1);
  std::normal_distribution<float> g(0.0f, 1.0f);
  for (uint64_t n : sizes) {
    // Two gradient-like tensors (heavy tails), alternating rounds.
    std::vector<Buffer> grads;
    for (int i = 0; i < 2; ++i) {
      Buffer b = Buffer::Allocate(n * sizeof(float));
      float* f = b.as<float>().data();
      for (uint64_t j = 0; j < n; ++j) f[j] = g(rng) * g(rng) * g(rng);
      grads.push_back(b);
    }
    Buffer dense = Buffer::Allocate(n * sizeof(float));
    for (double d : densities) {
      for (DType v : values) {
        ErrorFeedback ef(d, v);
        std::vector<double> c_s, d_s;
        size_t wire = 0;
        for (int r = 0; r <= *rounds; ++r) {
          auto t0 = std::chrono::steady_clock::now();
          Buffer w = ef.Compress(1, grads[r % 2], false);
          const double c = Seconds(t0);
          t0 = std::chrono::steady_clock::now();
          if (auto s = DecodeSparse(w, dense); !s.ok()) {
            std::fprintf(stderr, "geops-bench-compress: %s\n", std::string(s.message()).c_str());
            return 1;
          }
          const double dd = Seconds(t0);
          wire = w.size();
          if (r == 0) continue;  // warm-up: first touch of the residual
          c_s.push_back(c);
          d_s.push_back(dd);
        }
        const double bytes = static_cast<double>(n) * sizeof(float);
        const double c_gb = bytes / Summarize(c_s).p50 / 1e9, d_gb = bytes / Summarize(d_s).p50 / 1e9;
        compress_min = std::min(compress_min, c_gb);
        decode_min = std::min(decode_min, d_gb);
        std::printf("compress elements=%llu density=%g values=%s wire_bytes=%zu reduction=%.1f "
                    "compress_gbytes_per_s=%.3f decode_gbytes_per_s=%.3f\n",
                    static_cast<unsigned long long>(n), d, DTypeName(v), wire, bytes / wire, c_gb,
                    d_gb);
        std::fflush(stdout);
      }
    }
  }
  const double wan_gb = wan_gbps / 8;
  std::printf("geops-bench-compress compress_gbytes_per_s_min=%.3f decode_gbytes_per_s_min=%.3f "
              "wan_gbps=%g wan_gbytes_per_s=%.3f headroom_min=%.2f\n",
              compress_min, decode_min, wan_gbps, wan_gb, compress_min / wan_gb);
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return Run(argc, argv); }
