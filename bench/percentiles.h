// Latency samples and their order statistics.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

namespace geops::bench {

struct Percentiles {
  double p50 = 0;
  double p99 = 0;
  double mean = 0;
  size_t count = 0;
};

// Nearest-rank percentiles, so p99 of 100 samples is the 99th sample, an
// observed value rather than an interpolation between two.
inline Percentiles Summarize(std::vector<double> samples) {
  Percentiles p;
  p.count = samples.size();
  if (samples.empty()) return p;
  std::sort(samples.begin(), samples.end());
  auto rank = [&](double q) {
    size_t r = static_cast<size_t>(std::ceil(q * samples.size()));
    return samples[std::clamp<size_t>(r, 1, samples.size()) - 1];
  };
  p.p50 = rank(0.50);
  p.p99 = rank(0.99);
  double sum = 0;
  for (double s : samples) sum += s;
  p.mean = sum / samples.size();
  return p;
}

}  // namespace geops::bench
