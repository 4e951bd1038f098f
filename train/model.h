// The models a worker trains on Fashion-MNIST: softmax regression and a
// one-hidden-layer ReLU MLP, each over ONE flat float vector of parameters,
// so that a parameter server holds a model as a few keys (ParamLayout) and
// a push is one contiguous gradient.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "train/fashion_mnist.h"

namespace geops::train {

enum class ModelKind { kSoftmax, kMlp };

struct ModelSpec {
  ModelKind kind = ModelKind::kSoftmax;
  int hidden = 128;  // MLP only
};

// "softmax", "mlp" (hidden 128) or "mlp:H".
absl::StatusOr<ModelSpec> ParseModel(std::string_view s);
// The inverse of ParseModel, for logs: "softmax" or "mlp:H".
std::string ModelName(const ModelSpec& spec);

// Element counts of the tensors, in the order they sit in the flat vector:
// softmax: W (784 x 10), b (10); MLP: W1 (784 x H), b1 (H), W2 (H x 10),
// b2 (10). Weights are row-major with the input index first, so the
// forward and backward passes stream whole rows.
std::vector<int> ParamLayout(const ModelSpec& spec);
size_t ParamCount(const ModelSpec& spec);

// Glorot-uniform weights, zero biases. Bit-identical for a seed on any
// machine (our own generator and float arithmetic only), so every worker
// and server of a job can start from the same model without shipping it.
std::vector<float> InitParams(const ModelSpec& spec, uint64_t seed);

// Mean cross-entropy over examples idx[0..batch) of `data` (whose dim must
// be 784). If `grad` is not null it receives the gradient of that mean,
// ParamCount(spec) floats, overwritten. Thread-safe: no shared scratch.
double LossAndGradient(const ModelSpec& spec, const float* params, const Dataset& data,
                       const int* idx, int batch, float* grad);

// Fraction of `data` classified correctly (argmax of the logits).
double Accuracy(const ModelSpec& spec, const float* params, const Dataset& data);

}  // namespace geops::train
