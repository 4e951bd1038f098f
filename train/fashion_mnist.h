// Fashion-MNIST from the gzip'd IDX files of Debian's dataset-fashion-mnist
// package, and the split of a data set across workers.
//
// Everything is checked at load time (magic numbers, counts, sizes, labels)
// so that a broken or missing install fails with one line naming the file,
// not with a trainer that quietly learns from garbage.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace geops::train {

// Where the Debian package puts the four files.
inline constexpr char kFashionMnistDir[] = "/usr/share/datasets/fashion-mnist";

inline constexpr int kImageSide = 28;
inline constexpr int kImageDim = kImageSide * kImageSide;
inline constexpr int kNumClasses = 10;

struct Dataset {
  int n = 0;
  int dim = kImageDim;
  std::vector<float> x;    // n * dim, row-major, pixels scaled to [0, 1]
  std::vector<uint8_t> y;  // n labels in 0..kNumClasses-1
};

// The training set (60,000) or the test set (10,000) from `dir`.
// Uncompressed IDX files under the .gz names load too (zlib passes them
// through).
absl::StatusOr<Dataset> LoadFashionMnist(const std::string& dir, bool train);

// The examples of worker `index` of `count`: those i with i % count == index,
// in order. Strided rather than contiguous so that every worker sees every
// class even if a file happens to be sorted; deterministic, so a restarted
// worker trains on the same examples.
std::vector<int> ShardIndices(int n, int index, int count);
absl::StatusOr<Dataset> Shard(const Dataset& data, int index, int count);

}  // namespace geops::train
