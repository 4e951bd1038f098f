// train/: the Fashion-MNIST loader (real files when the Debian package is
// installed, broken ones always), sharding across workers, and the models'
// gradients (against central differences) and learning (a short SGD run).
#include <catch2/catch.hpp>
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include <unistd.h>

#include "train/fashion_mnist.h"
#include "train/model.h"

using namespace geops::train;

namespace {

// The test's own generator: fixed streams, independent of the library's.
struct Rng {
  uint64_t s;
  uint64_t Next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  float Uniform() { return static_cast<float>(Next() >> 40) * 0x1p-24f; }  // [0, 1)
};

// Random images with a third of the pixels zero, like Fashion-MNIST's
// background, so the models' zero-skipping paths are exercised too.
Dataset RandomData(int n, uint64_t seed) {
  Rng r{seed};
  Dataset d;
  d.n = n;
  d.x.resize(size_t(n) * d.dim);
  for (float& v : d.x) v = r.Next() % 3 == 0 ? 0.0f : r.Uniform();
  for (int i = 0; i < n; ++i) d.y.push_back(static_cast<uint8_t>(r.Next() % kNumClasses));
  return d;
}

bool HaveFashionMnist() { return std::filesystem::is_directory(kFashionMnistDir); }

// Loaded once for the whole run: decompressing 60,000 images takes a while.
const absl::StatusOr<Dataset>& Cached(bool train) {
  static const absl::StatusOr<Dataset> tr = LoadFashionMnist(kFashionMnistDir, true);
  static const absl::StatusOr<Dataset> te = LoadFashionMnist(kFashionMnistDir, false);
  return train ? tr : te;
}

// A scratch directory removed at the end of the test.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    path = std::filesystem::temp_directory_path() /
           ("geops_train_test_" + std::to_string(::getpid()));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

void WriteGz(const std::filesystem::path& p, const std::vector<unsigned char>& bytes) {
  gzFile f = gzopen(p.c_str(), "wb");
  REQUIRE(f != nullptr);
  if (!bytes.empty()) {
    REQUIRE(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())) ==
            static_cast<int>(bytes.size()));
  }
  REQUIRE(gzclose(f) == Z_OK);
}

std::vector<unsigned char> Header(std::initializer_list<uint32_t> words) {
  std::vector<unsigned char> b;
  for (uint32_t w : words) {
    for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<unsigned char>(w >> s));
  }
  return b;
}

// A well-formed pair of n examples, every label `label`.
void WriteGoodSet(const std::filesystem::path& dir, int n, unsigned char label) {
  auto img = Header({2051, uint32_t(n), 28, 28});
  img.resize(img.size() + size_t(n) * 784, 255);
  WriteGz(dir / "t10k-images-idx3-ubyte.gz", img);
  auto lab = Header({2049, uint32_t(n)});
  lab.resize(lab.size() + n, label);
  WriteGz(dir / "t10k-labels-idx1-ubyte.gz", lab);
}

std::string ErrorOf(const std::filesystem::path& dir) {
  auto d = LoadFashionMnist(dir.string(), /*train=*/false);
  REQUIRE_FALSE(d.ok());
  std::string msg(d.status().message());
  INFO(msg);
  CHECK(msg.find('\n') == std::string::npos);
  return msg;
}

bool Contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// Central differences on `samples` coordinates (plus every bias of the
// output layer) against LossAndGradient's gradient.
void CheckGradient(const ModelSpec& spec, uint64_t seed) {
  Dataset d = RandomData(6, seed);
  std::vector<float> p = InitParams(spec, seed);
  Rng r{seed * 7 + 1};
  // Non-zero biases too, so their gradients and the ReLU mask are generic.
  for (float& v : p) v += 0.05f * (2 * r.Uniform() - 1);
  std::vector<int> idx(d.n);
  std::iota(idx.begin(), idx.end(), 0);
  std::vector<float> g(p.size());
  const double loss = LossAndGradient(spec, p.data(), d, idx.data(), d.n, g.data());
  REQUIRE(std::isfinite(loss));
  REQUIRE(loss > 0);

  std::vector<size_t> coords;
  for (int k = 0; k < 150; ++k) coords.push_back(r.Next() % p.size());
  for (int k = 0; k < kNumClasses; ++k) coords.push_back(p.size() - 1 - k);
  double diff2 = 0, sum2 = 0;
  int bad = 0;
  std::string off;
  for (size_t c : coords) {
    const float orig = p[c];
    // Small enough that few ReLU kinks fall inside the step (a pre-activation
    // moves by at most x * eps), large enough for float's rounding.
    const float eps = 3e-3f;
    p[c] = orig + eps;
    const float up = p[c];
    const double lp = LossAndGradient(spec, p.data(), d, idx.data(), d.n, nullptr);
    p[c] = orig - eps;
    const float down = p[c];
    const double lm = LossAndGradient(spec, p.data(), d, idx.data(), d.n, nullptr);
    p[c] = orig;
    const double num = (lp - lm) / (double(up) - double(down));
    const double ana = g[c];
    diff2 += (num - ana) * (num - ana);
    sum2 += (num + ana) * (num + ana);
    // A ReLU kink inside [orig - eps, orig + eps] may spoil one coordinate.
    if (std::abs(num - ana) > 1e-2 * std::max(std::abs(num), std::abs(ana)) + 1e-4) {
      if (bad < 8) {
        off += " " + std::to_string(c) + ": " + std::to_string(num) + " vs " + std::to_string(ana);
      }
      ++bad;
    }
  }
  const double rel = std::sqrt(diff2 / sum2);
  INFO(ModelName(spec) << ": relative error " << rel << ", " << bad << " coordinates off:" << off);
  CHECK(rel < 1e-3);
  CHECK(bad <= (spec.kind == ModelKind::kSoftmax ? 0 : 2));
}

}  // namespace

TEST_CASE("train: gradients match central differences for softmax and mlp", "[train]") {
  CheckGradient(ModelSpec{ModelKind::kSoftmax}, 1);
  CheckGradient(ModelSpec{ModelKind::kSoftmax}, 2);
  CheckGradient(ModelSpec{ModelKind::kMlp, 16}, 3);
  CheckGradient(ModelSpec{ModelKind::kMlp, 16}, 4);
  CheckGradient(ModelSpec{ModelKind::kMlp, 128}, 5);
}

TEST_CASE("train: layout sums to the parameter count and init is deterministic", "[train]") {
  for (ModelSpec spec : {ModelSpec{ModelKind::kSoftmax}, ModelSpec{ModelKind::kMlp, 128},
                         ModelSpec{ModelKind::kMlp, 7}}) {
    INFO(ModelName(spec));
    const std::vector<int> layout = ParamLayout(spec);
    const size_t sum = std::accumulate(layout.begin(), layout.end(), size_t{0});
    CHECK(sum == ParamCount(spec));
    const std::vector<float> a = InitParams(spec, 42), b = InitParams(spec, 42);
    const std::vector<float> c = InitParams(spec, 43);
    REQUIRE(a.size() == sum);
    CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
    CHECK(a != c);
    // Weights inside the Glorot bound, not all equal; biases zero.
    const float limit = std::sqrt(6.0f / (784 + (spec.kind == ModelKind::kSoftmax ? 10 : spec.hidden)));
    for (int i = 0; i < layout[0]; ++i) REQUIRE(std::abs(a[i]) <= limit);
    CHECK(a[0] != a[1]);
    for (int i = layout[0]; i < layout[0] + layout[1]; ++i) REQUIRE(a[i] == 0.0f);
  }
  CHECK(ParamLayout(ModelSpec{ModelKind::kSoftmax}) == std::vector<int>{7840, 10});
  CHECK(ParamLayout(ModelSpec{ModelKind::kMlp, 128}) == std::vector<int>{100352, 128, 1280, 10});
  // Pinned bits: a change of generator would silently split a job's
  // workers onto different starting models if they ran different builds.
  const std::vector<float> s = InitParams(ModelSpec{ModelKind::kSoftmax}, 0);
  uint32_t bits;
  std::memcpy(&bits, &s[0], 4);
  INFO("first softmax weight for seed 0: 0x" << std::hex << bits);
  CHECK(bits == 0x3d887b79u);
}

TEST_CASE("train: model names parse, bad ones name the value", "[train]") {
  CHECK(ParseModel("softmax")->kind == ModelKind::kSoftmax);
  auto mlp = ParseModel("mlp");
  REQUIRE(mlp.ok());
  CHECK(mlp->kind == ModelKind::kMlp);
  CHECK(mlp->hidden == 128);
  CHECK(ParseModel("mlp:64")->hidden == 64);
  CHECK(ModelName(*ParseModel("mlp:64")) == "mlp:64");
  for (const char* bad : {"", "cnn", "mlp:", "mlp:0", "mlp:-3", "mlp:x", "Softmax", "mlp:99999999",
                          "mlp: 64", "mlp:+64", "mlp:64x", "mlp:128:2"}) {
    auto s = ParseModel(bad);
    REQUIRE_FALSE(s.ok());
    const std::string msg(s.status().message());
    INFO(msg);
    CHECK(Contains(msg, std::string("\"") + bad + "\""));
    CHECK(Contains(msg, "softmax"));
    CHECK(Contains(msg, "mlp:H"));
  }
}

TEST_CASE("train: Fashion-MNIST loads, or the error names the package", "[train]") {
  if (!HaveFashionMnist()) {
    WARN("skipped: no Fashion-MNIST in " << kFashionMnistDir);
    auto d = LoadFashionMnist(kFashionMnistDir, true);
    REQUIRE_FALSE(d.ok());
    CHECK(Contains(std::string(d.status().message()), "dataset-fashion-mnist"));
    return;
  }
  for (bool train : {true, false}) {
    const auto& d = Cached(train);
    INFO((train ? "train" : "test") << ": " << d.status());
    REQUIRE(d.ok());
    CHECK(d->n == (train ? 60000 : 10000));
    CHECK(d->dim == 784);
    REQUIRE(d->x.size() == size_t(d->n) * 784);
    REQUIRE(d->y.size() == size_t(d->n));
    int per_class[kNumClasses] = {};
    for (uint8_t y : d->y) {
      REQUIRE(y < kNumClasses);
      ++per_class[y];
    }
    // Fashion-MNIST is balanced: 6,000 / 1,000 of each class.
    for (int c : per_class) CHECK(c == d->n / kNumClasses);
    float lo = 1, hi = 0;
    for (float v : d->x) {
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
    CHECK(lo == 0.0f);
    CHECK(hi == 1.0f);
  }
}

TEST_CASE("train: a missing directory names the package", "[train]") {
  auto d = LoadFashionMnist("/nonexistent/geops/fashion-mnist", false);
  REQUIRE_FALSE(d.ok());
  const std::string msg(d.status().message());
  INFO(msg);
  CHECK(Contains(msg, "/nonexistent/geops/fashion-mnist"));
  CHECK(Contains(msg, "install the Debian package dataset-fashion-mnist"));
}

TEST_CASE("train: malformed IDX files give a clear error naming the file", "[train]") {
  TempDir tmp;
  const std::string images = (tmp.path / "t10k-images-idx3-ubyte.gz").string();
  const std::string labels = (tmp.path / "t10k-labels-idx1-ubyte.gz").string();

  SECTION("a good small set loads") {
    WriteGoodSet(tmp.path, 3, 7);
    auto d = LoadFashionMnist(tmp.path.string(), false);
    INFO(d.status());
    REQUIRE(d.ok());
    CHECK(d->n == 3);
    CHECK(d->x[0] == 1.0f);
    CHECK(d->y == std::vector<uint8_t>{7, 7, 7});
  }
  SECTION("missing file") {
    std::string msg = ErrorOf(tmp.path);
    CHECK(Contains(msg, images));
    CHECK(Contains(msg, "no such file"));
  }
  SECTION("wrong image magic") {
    WriteGoodSet(tmp.path, 2, 1);
    auto img = Header({2049, 2, 28, 28});
    img.resize(img.size() + 2 * 784);
    WriteGz(images, img);
    std::string msg = ErrorOf(tmp.path);
    CHECK(Contains(msg, images));
    CHECK(Contains(msg, "magic number 2049, expected 2051"));
  }
  SECTION("little-endian header") {
    WriteGoodSet(tmp.path, 2, 1);
    auto lab = Header({0x01080000, 0x02000000});
    lab.resize(lab.size() + 2);
    WriteGz(labels, lab);
    std::string msg = ErrorOf(tmp.path);
    CHECK(Contains(msg, labels));
    CHECK(Contains(msg, "expected 2049"));
  }
  SECTION("wrong image size") {
    WriteGoodSet(tmp.path, 2, 1);
    auto img = Header({2051, 2, 32, 32});
    img.resize(img.size() + 2 * 1024);
    WriteGz(images, img);
    std::string msg = ErrorOf(tmp.path);
    CHECK(Contains(msg, images));
    CHECK(Contains(msg, "32x32, expected 28x28"));
  }
  SECTION("truncated payload") {
    WriteGoodSet(tmp.path, 2, 1);
    auto img = Header({2051, 5, 28, 28});
    img.resize(img.size() + 2 * 784 + 100);
    WriteGz(images, img);
    std::string msg = ErrorOf(tmp.path);
    CHECK(Contains(msg, images));
    CHECK(Contains(msg, "truncated"));
  }
  SECTION("truncated header") {
    WriteGoodSet(tmp.path, 2, 1);
    WriteGz(labels, {0, 0, 8});
    std::string msg = ErrorOf(tmp.path);
    CHECK(Contains(msg, labels));
    CHECK(Contains(msg, "header"));
  }
  SECTION("gzip stream cut short") {
    WriteGoodSet(tmp.path, 40, 1);
    std::error_code ec;
    std::filesystem::resize_file(images, std::filesystem::file_size(images) / 2, ec);
    REQUIRE_FALSE(ec);
    std::string msg = ErrorOf(tmp.path);
    CHECK(Contains(msg, images));
    CHECK((Contains(msg, "truncated") || Contains(msg, "cannot decompress")));
  }
  SECTION("gzip trailer cut off") {
    WriteGoodSet(tmp.path, 4, 1);
    std::error_code ec;
    std::filesystem::resize_file(labels, std::filesystem::file_size(labels) - 4, ec);
    REQUIRE_FALSE(ec);
    std::string msg = ErrorOf(tmp.path);
    CHECK(Contains(msg, labels));
    CHECK(Contains(msg, "cannot decompress"));
  }
  SECTION("gzip checksum wrong") {
    WriteGoodSet(tmp.path, 4, 1);
    {
      // The CRC-32 sits 8 bytes from the end of a gzip file.
      std::FILE* f = std::fopen(labels.c_str(), "r+b");
      REQUIRE(f != nullptr);
      REQUIRE(std::fseek(f, -8, SEEK_END) == 0);
      const int c = std::fgetc(f);
      REQUIRE(std::fseek(f, -8, SEEK_END) == 0);
      std::fputc(c ^ 1, f);
      std::fclose(f);
    }
    std::string msg = ErrorOf(tmp.path);
    CHECK(Contains(msg, labels));
    CHECK(Contains(msg, "incorrect data check"));
  }
  SECTION("count mismatch between images and labels") {
    WriteGoodSet(tmp.path, 3, 1);
    auto lab = Header({2049, 2});
    lab.resize(lab.size() + 2, 1);
    WriteGz(labels, lab);
    std::string msg = ErrorOf(tmp.path);
    CHECK(Contains(msg, labels));
    CHECK(Contains(msg, images));
    CHECK(Contains(msg, "2 labels"));
  }
  SECTION("trailing bytes") {
    WriteGoodSet(tmp.path, 2, 1);
    auto lab = Header({2049, 2});
    lab.resize(lab.size() + 3, 1);
    WriteGz(labels, lab);
    std::string msg = ErrorOf(tmp.path);
    CHECK(Contains(msg, labels));
    CHECK(Contains(msg, "trailing"));
  }
  SECTION("label out of range") {
    WriteGoodSet(tmp.path, 4, 10);
    std::string msg = ErrorOf(tmp.path);
    CHECK(Contains(msg, labels));
    CHECK(Contains(msg, "label 10 of example 0, expected 0..9"));
  }
  SECTION("absurd count in the header") {
    WriteGoodSet(tmp.path, 2, 1);
    WriteGz(images, Header({2051, 0xFFFFFFFFu, 28, 28}));
    std::string msg = ErrorOf(tmp.path);
    CHECK(Contains(msg, images));
    CHECK(Contains(msg, "4294967295 images"));
  }
  SECTION("not gzip, not IDX") {
    WriteGoodSet(tmp.path, 2, 1);
    {
      std::FILE* f = std::fopen(images.c_str(), "wb");
      REQUIRE(f != nullptr);
      std::fputs("<html>404 not found</html>", f);
      std::fclose(f);
    }
    std::string msg = ErrorOf(tmp.path);
    CHECK(Contains(msg, images));
  }
}

TEST_CASE("train: shards partition the examples exactly", "[train]") {
  const Dataset d = RandomData(103, 9);
  for (int count : {1, 2, 3, 7, 103, 150}) {
    INFO("count " << count);
    std::vector<int> seen(d.n, 0);
    for (int index = 0; index < count; ++index) {
      const std::vector<int> idx = ShardIndices(d.n, index, count);
      auto s = Shard(d, index, count);
      REQUIRE(s.ok());
      REQUIRE(s->n == static_cast<int>(idx.size()));
      // Sizes differ by at most one across workers.
      CHECK((s->n == d.n / count || s->n == d.n / count + 1));
      for (int k = 0; k < s->n; ++k) {
        const int i = idx[k];
        REQUIRE(i % count == index);
        ++seen[i];
        REQUIRE(s->y[k] == d.y[i]);
        REQUIRE(std::memcmp(&s->x[size_t(k) * 784], &d.x[size_t(i) * 784], 784 * 4) == 0);
      }
      CHECK(ShardIndices(d.n, index, count) == idx);  // deterministic
    }
    for (int i = 0; i < d.n; ++i) REQUIRE(seen[i] == 1);
  }
  for (auto [index, count] : {std::pair{3, 3}, std::pair{-1, 2}, std::pair{0, 0}}) {
    auto s = Shard(d, index, count);
    REQUIRE_FALSE(s.ok());
    CHECK(Contains(std::string(s.status().message()), "shard " + std::to_string(index)));
  }
}

TEST_CASE("train: one epoch of SGD on softmax passes 70% test accuracy", "[train]") {
  if (!HaveFashionMnist()) {
    WARN("skipped: no Fashion-MNIST in " << kFashionMnistDir);
    return;
  }
  const auto& train = Cached(true);
  const auto& test_all = Cached(false);
  REQUIRE(train.ok());
  REQUIRE(test_all.ok());
  Dataset test;
  test.n = 2000;
  test.x.assign(test_all->x.begin(), test_all->x.begin() + 2000 * 784);
  test.y.assign(test_all->y.begin(), test_all->y.begin() + 2000);

  const ModelSpec spec{ModelKind::kSoftmax};
  std::vector<float> p = InitParams(spec, 1);
  std::vector<float> g(p.size());
  const double before = Accuracy(spec, p.data(), test);
  const auto t0 = std::chrono::steady_clock::now();
  const int n = 10000, batch = 32;
  const float lr = 0.1f;
  std::vector<int> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  double first_loss = 0, last_loss = 0;
  for (int start = 0; start < n; start += batch) {
    const int b = std::min(batch, n - start);
    last_loss = LossAndGradient(spec, p.data(), *train, idx.data() + start, b, g.data());
    if (start == 0) first_loss = last_loss;
    for (size_t k = 0; k < p.size(); ++k) p[k] -= lr * g[k];
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double acc = Accuracy(spec, p.data(), test);
  INFO("test accuracy " << before << " -> " << acc << ", loss " << first_loss << " -> "
                        << last_loss << ", epoch " << secs << " s");
  CHECK(last_loss < first_loss);
  CHECK(acc > 0.70);
}
