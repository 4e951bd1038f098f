#include "bench/args.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace geops::bench {

absl::StatusOr<Args> Args::Parse(const std::vector<std::string>& argv,
                                 const std::set<std::string>& flags) {
  Args a;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& arg = argv[i];
    if (!absl::StartsWith(arg, "--") || arg.size() < 3) {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument \"", arg, "\""));
    }
    std::string name = arg.substr(2);
    std::string value;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    } else if (flags.count(name)) {
      value = "1";
    } else if (i + 1 < argv.size()) {
      value = argv[++i];
    } else {
      return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
    }
    a.values_[name] = value;
  }
  return a;
}

bool Args::Has(const std::string& name) {
  used_.insert(name);
  return values_.count(name) > 0;
}

std::string Args::Str(const std::string& name, const std::string& fallback) {
  used_.insert(name);
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second;
}

absl::StatusOr<int64_t> Args::Int(const std::string& name, int64_t fallback, int64_t lo,
                                  int64_t hi) {
  used_.insert(name);
  auto it = values_.find(name);
  if (it == values_.end()) return fallback;
  int64_t v = 0;
  if (!absl::SimpleAtoi(it->second, &v) || v < lo || v > hi) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, " \"", it->second, "\": expected an integer in ", lo, "..", hi));
  }
  return v;
}

absl::StatusOr<double> Args::Seconds(const std::string& name, double fallback) {
  used_.insert(name);
  auto it = values_.find(name);
  if (it == values_.end()) return fallback;
  double v = 0;
  if (!absl::SimpleAtod(it->second, &v) || !(v > 0) || v > 86400) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, " \"", it->second, "\": expected seconds in (0, 86400]"));
  }
  return v;
}

absl::StatusOr<std::vector<uint64_t>> Args::Sizes(const std::string& name,
                                                  const std::vector<uint64_t>& fallback) {
  used_.insert(name);
  auto it = values_.find(name);
  if (it == values_.end()) return fallback;
  std::vector<uint64_t> out;
  for (absl::string_view part : absl::StrSplit(it->second, ',', absl::SkipEmpty())) {
    auto b = ParseBytes(std::string(part));
    if (!b.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--", name, ": ", b.status().message()));
    }
    out.push_back(*b);
  }
  if (out.empty()) return absl::InvalidArgumentError(absl::StrCat("--", name, " is empty"));
  return out;
}

absl::Status Args::CheckAllUsed() const {
  for (const auto& [name, value] : values_) {
    if (!used_.count(name)) {
      return absl::InvalidArgumentError(absl::StrCat("unknown option --", name, " (see --help)"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> ParseBytes(const std::string& text) {
  std::string t = absl::AsciiStrToLower(absl::StripAsciiWhitespace(text));
  uint64_t scale = 1;
  for (auto [suffix, mult] : {std::pair<const char*, uint64_t>{"kib", 1ull << 10},
                              {"mib", 1ull << 20}, {"gib", 1ull << 30}, {"k", 1ull << 10},
                              {"m", 1ull << 20}, {"g", 1ull << 30}, {"b", 1}}) {
    if (absl::EndsWith(t, suffix)) {
      t.resize(t.size() - std::string(suffix).size());
      scale = mult;
      break;
    }
  }
  uint64_t n = 0;
  if (t.empty() || !absl::SimpleAtoi(t, &n) || n == 0 || n > (uint64_t{1} << 34) / scale) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", text, "\" is not a size in bytes (e.g. 64, 4K, 1MiB; max 16GiB)"));
  }
  return n * scale;
}

std::string FormatBytes(uint64_t bytes) {
  if (bytes >= (1ull << 30) && bytes % (1ull << 30) == 0) return absl::StrCat(bytes >> 30, "GiB");
  if (bytes >= (1ull << 20) && bytes % (1ull << 20) == 0) return absl::StrCat(bytes >> 20, "MiB");
  if (bytes >= (1ull << 10) && bytes % (1ull << 10) == 0) return absl::StrCat(bytes >> 10, "KiB");
  return absl::StrCat(bytes);
}

std::vector<std::string> SplitWords(const std::string& text) {
  std::vector<std::string> out;
  for (absl::string_view w : absl::StrSplit(text, absl::ByAnyChar(" \t\n"), absl::SkipEmpty())) {
    out.emplace_back(w);
  }
  return out;
}

}  // namespace geops::bench
