#include "train/model.h"

#include <algorithm>
#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace geops::train {
namespace {

constexpr int kDefaultHidden = 128;
constexpr int kMaxHidden = 1 << 16;

// splitmix64: a few integer operations, so the same seed gives the same
// stream everywhere (std:: distributions are implementation-defined).
uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// y += a * x. The restrict pointers let the compiler vectorise without a
// run-time overlap check; every call here has disjoint x and y.
inline void Axpy(int n, float a, const float* __restrict x, float* __restrict y) {
  for (int j = 0; j < n; ++j) y[j] += a * x[j];
}

// y = b + x W for W (in x out) row-major. Zero inputs are skipped: about
// half the pixels of a Fashion-MNIST image and half the units after a ReLU.
void DenseForward(const float* x, int in, const float* W, const float* b, int out, float* y) {
  std::copy(b, b + out, y);
  for (int i = 0; i < in; ++i) {
    if (x[i] != 0.0f) Axpy(out, x[i], W + size_t(i) * out, y);
  }
}

// gW += x^T d, gb += d, with the same zero skip as the forward pass.
void DenseBackward(const float* x, int in, const float* d, int out, float* gW, float* gb) {
  for (int k = 0; k < out; ++k) gb[k] += d[k];
  for (int i = 0; i < in; ++i) {
    if (x[i] != 0.0f) Axpy(out, x[i], d, gW + size_t(i) * out);
  }
}

// Turns logits into d(loss)/d(logits) scaled by `scale` (1/batch) and
// returns the example's loss. Log-sum-exp in double after subtracting the
// max, so no logit can overflow or make the loss lose its digits.
double SoftmaxCrossEntropy(float* z, int label, float scale) {
  float m = z[0];
  for (int k = 1; k < kNumClasses; ++k) m = std::max(m, z[k]);
  double e[kNumClasses];
  double sum = 0;
  for (int k = 0; k < kNumClasses; ++k) {
    e[k] = std::exp(double(z[k]) - double(m));
    sum += e[k];
  }
  const double loss = std::log(sum) - (double(z[label]) - double(m));
  for (int k = 0; k < kNumClasses; ++k) {
    z[k] = static_cast<float>((e[k] / sum - (k == label ? 1.0 : 0.0)) * scale);
  }
  return loss;
}

int ArgMax(const float* z) {
  int best = 0;
  for (int k = 1; k < kNumClasses; ++k) {
    if (z[k] > z[best]) best = k;
  }
  return best;
}

// Offsets of the tensors in the flat vector (see ParamLayout).
struct Views {
  const float *w1, *b1, *w2, *b2;  // softmax: w1, b1 only
};
Views View(const ModelSpec& spec, const float* p) {
  if (spec.kind == ModelKind::kSoftmax) {
    return {p, p + kImageDim * kNumClasses, nullptr, nullptr};
  }
  const size_t h = static_cast<size_t>(spec.hidden);
  const float* w1 = p;
  const float* b1 = w1 + kImageDim * h;
  const float* w2 = b1 + h;
  const float* b2 = w2 + h * kNumClasses;
  return {w1, b1, w2, b2};
}

}  // namespace

absl::StatusOr<ModelSpec> ParseModel(std::string_view s) {
  if (s == "softmax") return ModelSpec{ModelKind::kSoftmax, kDefaultHidden};
  if (s == "mlp") return ModelSpec{ModelKind::kMlp, kDefaultHidden};
  if (s.substr(0, 4) == "mlp:") {
    // Digits only: SimpleAtoi would also take " 64" and "+64".
    const std::string digits(s.substr(4));
    int h = 0;
    if (!digits.empty() && digits.size() <= 6 &&
        std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }) &&
        absl::SimpleAtoi(digits, &h) && h >= 1 && h <= kMaxHidden) {
      return ModelSpec{ModelKind::kMlp, h};
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("model \"", std::string(s), "\": expected softmax, mlp (", kDefaultHidden,
                   " hidden units) or mlp:H with H a hidden size in 1..", kMaxHidden));
}

std::string ModelName(const ModelSpec& spec) {
  return spec.kind == ModelKind::kSoftmax ? std::string("softmax")
                                          : absl::StrCat("mlp:", spec.hidden);
}

std::vector<int> ParamLayout(const ModelSpec& spec) {
  if (spec.kind == ModelKind::kSoftmax) return {kImageDim * kNumClasses, kNumClasses};
  const int h = spec.hidden;
  return {kImageDim * h, h, h * kNumClasses, kNumClasses};
}

size_t ParamCount(const ModelSpec& spec) {
  size_t n = 0;
  for (int c : ParamLayout(spec)) n += static_cast<size_t>(c);
  return n;
}

std::vector<float> InitParams(const ModelSpec& spec, uint64_t seed) {
  std::vector<float> p;
  p.reserve(ParamCount(spec));
  uint64_t state = seed;
  // Glorot-uniform W (fan_in x fan_out), then its bias as zeros.
  auto layer = [&](int fan_in, int fan_out) {
    const float limit = static_cast<float>(std::sqrt(6.0 / (fan_in + fan_out)));
    for (int i = 0; i < fan_in * fan_out; ++i) {
      // 24 random bits: exactly representable, so u is the same float everywhere.
      const float u = static_cast<float>(SplitMix64(state) >> 40) * 0x1p-24f;
      p.push_back((2.0f * u - 1.0f) * limit);
    }
    p.insert(p.end(), static_cast<size_t>(fan_out), 0.0f);
  };
  if (spec.kind == ModelKind::kSoftmax) {
    layer(kImageDim, kNumClasses);
  } else {
    layer(kImageDim, spec.hidden);
    layer(spec.hidden, kNumClasses);
  }
  return p;
}

double LossAndGradient(const ModelSpec& spec, const float* params, const Dataset& data,
                       const int* idx, int batch, float* grad) {
  if (batch <= 0) return 0.0;
  const size_t count = ParamCount(spec);
  if (grad != nullptr) std::fill(grad, grad + count, 0.0f);
  const Views v = View(spec, params);
  const float scale = 1.0f / static_cast<float>(batch);
  const int h = spec.hidden;
  std::vector<float> hidden(spec.kind == ModelKind::kMlp ? h : 0);
  std::vector<float> dhidden(hidden.size());
  float z[kNumClasses];
  double loss = 0;
  for (int b = 0; b < batch; ++b) {
    const float* x = data.x.data() + size_t(idx[b]) * data.dim;
    const int label = data.y[idx[b]];
    if (spec.kind == ModelKind::kSoftmax) {
      DenseForward(x, kImageDim, v.w1, v.b1, kNumClasses, z);
      loss += SoftmaxCrossEntropy(z, label, scale);
      if (grad != nullptr) {
        DenseBackward(x, kImageDim, z, kNumClasses, grad, grad + kImageDim * kNumClasses);
      }
      continue;
    }
    DenseForward(x, kImageDim, v.w1, v.b1, h, hidden.data());
    for (float& a : hidden) a = std::max(a, 0.0f);
    DenseForward(hidden.data(), h, v.w2, v.b2, kNumClasses, z);
    loss += SoftmaxCrossEntropy(z, label, scale);
    if (grad == nullptr) continue;
    float* gw1 = grad;
    float* gb1 = gw1 + size_t(kImageDim) * h;
    float* gw2 = gb1 + h;
    float* gb2 = gw2 + size_t(h) * kNumClasses;
    DenseBackward(hidden.data(), h, z, kNumClasses, gw2, gb2);
    // Back through W2 and the ReLU (derivative 0 at 0, as the forward skip).
    for (int j = 0; j < h; ++j) {
      float s = 0;
      if (hidden[j] > 0.0f) {
        const float* w = v.w2 + size_t(j) * kNumClasses;
        for (int k = 0; k < kNumClasses; ++k) s += w[k] * z[k];
      }
      dhidden[j] = s;
    }
    DenseBackward(x, kImageDim, dhidden.data(), h, gw1, gb1);
  }
  return loss / batch;
}

double Accuracy(const ModelSpec& spec, const float* params, const Dataset& data) {
  if (data.n <= 0) return 0.0;
  const Views v = View(spec, params);
  std::vector<float> hidden(spec.kind == ModelKind::kMlp ? spec.hidden : 0);
  float z[kNumClasses];
  int correct = 0;
  for (int i = 0; i < data.n; ++i) {
    const float* x = data.x.data() + size_t(i) * data.dim;
    if (spec.kind == ModelKind::kSoftmax) {
      DenseForward(x, kImageDim, v.w1, v.b1, kNumClasses, z);
    } else {
      DenseForward(x, kImageDim, v.w1, v.b1, spec.hidden, hidden.data());
      for (float& a : hidden) a = std::max(a, 0.0f);
      DenseForward(hidden.data(), spec.hidden, v.w2, v.b2, kNumClasses, z);
    }
    correct += ArgMax(z) == data.y[i];
  }
  return static_cast<double>(correct) / data.n;
}

}  // namespace geops::train
