#include "train/fashion_mnist.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string_view>
#include <type_traits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace geops::train {
namespace {

constexpr uint32_t kImagesMagic = 2051;  // 0x00000803: unsigned bytes, 3 dims
constexpr uint32_t kLabelsMagic = 2049;  // 0x00000801: unsigned bytes, 1 dim
// Far above either file; bounds what a corrupt header can make us allocate.
constexpr uint32_t kMaxExamples = 10'000'000;

constexpr char kInstallHint[] = "install the Debian package dataset-fashion-mnist";

struct GzCloser {
  void operator()(gzFile f) const { gzclose(f); }
};
using GzFile = std::unique_ptr<std::remove_pointer_t<gzFile>, GzCloser>;

// zlib's message for f's error state, "" if none. zlib puts the path in
// front; ours already starts with it.
std::string ZlibError(gzFile f, const std::string& path) {
  int err = Z_OK;
  const char* msg = gzerror(f, &err);
  if (err == Z_OK || msg == nullptr) return "";
  std::string_view m(msg);
  if (m.substr(0, path.size() + 2) == path + ": ") m.remove_prefix(path.size() + 2);
  return m.empty() ? absl::StrCat("zlib error ", err) : std::string(m);
}

// Reads exactly `len` bytes. Short reads are the common corruption (a
// truncated download), so they are named with how much was there.
absl::Status ReadExactly(gzFile f, const std::string& path, void* out, size_t len,
                         const std::string& what) {
  auto* p = static_cast<unsigned char*>(out);
  size_t done = 0;
  while (done < len) {
    // gzread takes an unsigned count; stay well inside it.
    unsigned chunk = static_cast<unsigned>(std::min<size_t>(len - done, 1u << 24));
    int got = gzread(f, p + done, chunk);
    if (got < 0) {
      return absl::DataLossError(absl::StrCat(path, ": cannot decompress (",
                                              ZlibError(f, path), ") while reading ", what));
    }
    if (got == 0) break;
    done += static_cast<size_t>(got);
  }
  if (done < len) {
    // A gzip stream cut short reads as a short read plus an error state.
    const std::string z = ZlibError(f, path);
    return absl::DataLossError(absl::StrCat(path, ": truncated: expected ", len, " bytes of ",
                                            what, ", found ", done,
                                            z.empty() ? "" : absl::StrCat(" (", z, ")")));
  }
  return absl::OkStatus();
}

uint32_t BigEndian32(const unsigned char* b) {
  return (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | uint32_t{b[3]};
}

absl::StatusOr<GzFile> Open(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    return absl::NotFoundError(absl::StrCat(path, ": no such file; ", kInstallHint));
  }
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr) {
    const int e = errno;
    return absl::Status(absl::ErrnoToStatusCode(e),
                        absl::StrCat(path, ": cannot open: ", std::strerror(e)));
  }
  return GzFile(f);
}

// Anything after the payload means the header's count is not the file's.
// Reading past the payload is also what makes zlib check the gzip trailer
// (CRC and length), so a damaged or cut trailer is caught here.
absl::Status ExpectEnd(gzFile f, const std::string& path) {
  unsigned char extra;
  int got = gzread(f, &extra, 1);
  if (const std::string z = ZlibError(f, path); got < 0 || !z.empty()) {
    return absl::DataLossError(absl::StrCat(path, ": cannot decompress (",
                                            z.empty() ? "zlib error" : z, ") at the end"));
  }
  if (got > 0) {
    return absl::DataLossError(
        absl::StrCat(path, ": trailing bytes after the count given in the header"));
  }
  return absl::OkStatus();
}

absl::Status ReadImages(const std::string& path, Dataset& out) {
  auto f = Open(path);
  if (!f.ok()) return f.status();
  unsigned char h[16];
  if (auto s = ReadExactly(f->get(), path, h, sizeof h, "header"); !s.ok()) return s;
  uint32_t magic = BigEndian32(h), n = BigEndian32(h + 4);
  uint32_t rows = BigEndian32(h + 8), cols = BigEndian32(h + 12);
  if (magic != kImagesMagic) {
    return absl::DataLossError(absl::StrCat(path, ": magic number ", magic, ", expected ",
                                            kImagesMagic, " (IDX unsigned-byte images)"));
  }
  if (rows != kImageSide || cols != kImageSide) {
    return absl::DataLossError(absl::StrCat(path, ": images are ", rows, "x", cols,
                                            ", expected ", kImageSide, "x", kImageSide));
  }
  if (n == 0 || n > kMaxExamples) {
    return absl::DataLossError(absl::StrCat(path, ": header says ", n,
                                            " images, expected 1..", kMaxExamples));
  }
  std::vector<unsigned char> pixels(size_t{n} * kImageDim);
  if (auto s = ReadExactly(f->get(), path, pixels.data(), pixels.size(),
                           absl::StrCat(n, " images"));
      !s.ok()) {
    return s;
  }
  if (auto s = ExpectEnd(f->get(), path); !s.ok()) return s;
  out.n = static_cast<int>(n);
  out.dim = kImageDim;
  out.x.resize(pixels.size());
  for (size_t i = 0; i < pixels.size(); ++i) out.x[i] = pixels[i] / 255.0f;
  return absl::OkStatus();
}

absl::Status ReadLabels(const std::string& path, Dataset& out) {
  auto f = Open(path);
  if (!f.ok()) return f.status();
  unsigned char h[8];
  if (auto s = ReadExactly(f->get(), path, h, sizeof h, "header"); !s.ok()) return s;
  uint32_t magic = BigEndian32(h), n = BigEndian32(h + 4);
  if (magic != kLabelsMagic) {
    return absl::DataLossError(absl::StrCat(path, ": magic number ", magic, ", expected ",
                                            kLabelsMagic, " (IDX unsigned-byte labels)"));
  }
  if (n == 0 || n > kMaxExamples) {
    return absl::DataLossError(absl::StrCat(path, ": header says ", n,
                                            " labels, expected 1..", kMaxExamples));
  }
  std::vector<uint8_t> y(n);
  if (auto s = ReadExactly(f->get(), path, y.data(), y.size(), absl::StrCat(n, " labels"));
      !s.ok()) {
    return s;
  }
  if (auto s = ExpectEnd(f->get(), path); !s.ok()) return s;
  for (uint32_t i = 0; i < n; ++i) {
    if (y[i] >= kNumClasses) {
      return absl::DataLossError(absl::StrCat(path, ": label ", int{y[i]}, " of example ", i,
                                              ", expected 0..", kNumClasses - 1));
    }
  }
  out.y = std::move(y);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Dataset> LoadFashionMnist(const std::string& dir, bool train) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) {
    return absl::NotFoundError(
        absl::StrCat("Fashion-MNIST directory ", dir, " not found; ", kInstallHint,
                     " (it installs to ", kFashionMnistDir, ")"));
  }
  const std::string prefix = (std::filesystem::path(dir) / (train ? "train" : "t10k")).string();
  const std::string images = prefix + "-images-idx3-ubyte.gz";
  const std::string labels = prefix + "-labels-idx1-ubyte.gz";
  Dataset d;
  if (auto s = ReadImages(images, d); !s.ok()) return s;
  if (auto s = ReadLabels(labels, d); !s.ok()) return s;
  if (d.y.size() != static_cast<size_t>(d.n)) {
    return absl::DataLossError(absl::StrCat(labels, " has ", d.y.size(), " labels but ", images,
                                            " has ", d.n, " images"));
  }
  return d;
}

std::vector<int> ShardIndices(int n, int index, int count) {
  std::vector<int> idx;
  if (count <= 0 || index < 0 || index >= count || n <= 0) return idx;
  idx.reserve(static_cast<size_t>(n / count + 1));
  for (int i = index; i < n; i += count) idx.push_back(i);
  return idx;
}

absl::StatusOr<Dataset> Shard(const Dataset& data, int index, int count) {
  if (count <= 0 || index < 0 || index >= count) {
    return absl::InvalidArgumentError(absl::StrCat("shard ", index, " of ", count,
                                                   ": expected count >= 1 and 0 <= index < count"));
  }
  Dataset s;
  s.dim = data.dim;
  const std::vector<int> idx = ShardIndices(data.n, index, count);
  s.n = static_cast<int>(idx.size());
  s.x.resize(size_t(s.n) * s.dim);
  s.y.resize(s.n);
  for (int k = 0; k < s.n; ++k) {
    const size_t i = static_cast<size_t>(idx[k]);
    std::memcpy(&s.x[size_t(k) * s.dim], &data.x[i * data.dim], sizeof(float) * data.dim);
    s.y[k] = data.y[i];
  }
  return s;
}

}  // namespace geops::train
