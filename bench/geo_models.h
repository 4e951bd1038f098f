// Tensor shapes of real models, for geops-bench-geo: what one synchronous
// round of data-parallel training moves, tensor by tensor, in the order a
// framework registers the parameters (forward order: key 0 is the first
// layer, which the next forward pass needs first).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace geops::bench {

struct ModelShape {
  std::string name;            // "resnet50", "resnet50/16", "sizes"
  std::vector<int64_t> elems;  // float32 elements per tensor (one key each)
  int64_t total_elems() const;
  int64_t bytes() const { return total_elems() * 4; }
};

// "resnet50" (torchvision: 161 tensors, 25,557,032 parameters),
// "bert-base" (BertModel, uncased vocabulary: 199 tensors, 109,482,240),
// or "sizes:LIST" with LIST byte sizes ("1000x1K,4MiB": 1000 keys of 1 KiB
// and one of 4 MiB). `scale` > 1 divides every tensor (rounding up, at
// least one element) and keeps their number: "resnet50/64" for CI.
absl::StatusOr<ModelShape> LookupModel(const std::string& name, int64_t scale);

// What the names above accept, for usage texts and errors.
const char* ModelChoices();

}  // namespace geops::bench
