#include "bench/geo_models.h"

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bench/args.h"

namespace geops::bench {
namespace {

// torchvision's resnet50: conv1 and its batch norm, four stages of
// bottleneck blocks (1x1, 3x3, 1x1 convolutions, each with a batch norm of
// weight and bias; the first block of a stage adds a projection), then fc.
std::vector<int64_t> ResNet50() {
  std::vector<int64_t> t;
  auto conv_bn = [&](int64_t out, int64_t in, int64_t k) {
    t.push_back(out * in * k * k);
    t.push_back(out);
    t.push_back(out);
  };
  conv_bn(64, 3, 7);
  int64_t in = 64;
  const int64_t blocks[4] = {3, 4, 6, 3}, widths[4] = {64, 128, 256, 512};
  for (int s = 0; s < 4; ++s) {
    const int64_t w = widths[s], out = 4 * w;
    for (int64_t b = 0; b < blocks[s]; ++b) {
      conv_bn(w, in, 1);
      conv_bn(w, w, 3);
      conv_bn(out, w, 1);
      if (b == 0) conv_bn(out, in, 1);  // downsample projection
      in = out;
    }
  }
  t.push_back(1000 * 2048);
  t.push_back(1000);
  return t;
}

// BERT-base as HuggingFace's BertModel registers it: embeddings (word,
// position, token type, layer norm), 12 encoder layers of 16 tensors each,
// and the pooler.
std::vector<int64_t> BertBase() {
  const int64_t h = 768, ff = 3072;
  std::vector<int64_t> t = {30522 * h, 512 * h, 2 * h, h, h};
  for (int l = 0; l < 12; ++l) {
    for (int qkv = 0; qkv < 3; ++qkv) {
      t.push_back(h * h);
      t.push_back(h);
    }
    t.insert(t.end(), {h * h, h, h, h});    // attention output dense, layer norm
    t.insert(t.end(), {ff * h, ff});        // intermediate
    t.insert(t.end(), {h * ff, h, h, h});   // output dense, layer norm
  }
  t.push_back(h * h);
  t.push_back(h);
  return t;
}

absl::StatusOr<std::vector<int64_t>> FromSizes(const std::string& list) {
  std::vector<int64_t> t;
  for (absl::string_view part : absl::StrSplit(list, ',')) {
    int64_t count = 1;
    std::string size(part);
    if (auto x = part.find('x'); x != absl::string_view::npos) {
      if (!absl::SimpleAtoi(part.substr(0, x), &count) || count < 1 || count > 1000000) {
        return absl::InvalidArgumentError(
            absl::StrCat("\"", part, "\": COUNTxSIZE needs a count in 1..1000000"));
      }
      size = std::string(part.substr(x + 1));
    }
    auto bytes = ParseBytes(size);
    if (!bytes.ok()) return bytes.status();
    if (*bytes < 4 || *bytes % 4 != 0 || *bytes > (uint64_t{1} << 30)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "\"", part, "\": a tensor size must be a multiple of 4 bytes (float32), 4..1GiB"));
    }
    for (int64_t i = 0; i < count; ++i) t.push_back(static_cast<int64_t>(*bytes / 4));
  }
  if (t.empty()) return absl::InvalidArgumentError("sizes: an empty list");
  return t;
}

}  // namespace

int64_t ModelShape::total_elems() const {
  int64_t n = 0;
  for (int64_t e : elems) n += e;
  return n;
}

const char* ModelChoices() {
  return "resnet50, bert-base, or sizes:LIST (e.g. sizes:1000x1K,4MiB)";
}

absl::StatusOr<ModelShape> LookupModel(const std::string& name, int64_t scale) {
  if (scale < 1) return absl::InvalidArgumentError("the scale must be >= 1");
  ModelShape m;
  if (name == "resnet50") {
    m.elems = ResNet50();
  } else if (name == "bert-base") {
    m.elems = BertBase();
  } else if (absl::StartsWith(name, "sizes:")) {
    auto t = FromSizes(name.substr(6));
    if (!t.ok()) return t.status();
    m.elems = std::move(*t);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("model \"", name, "\": expected ", ModelChoices()));
  }
  if (scale > 1) {
    for (int64_t& e : m.elems) e = (e + scale - 1) / scale;
  }
  m.name = absl::StartsWith(name, "sizes:") ? "sizes" : name;
  if (scale > 1) absl::StrAppend(&m.name, "/", scale);
  return m;
}

}  // namespace geops::bench
