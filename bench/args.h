// Args: the command line of a bench program as `--name value` pairs.
//
// Bench programs take few options, and a second flags library would be one
// more dependency for every deployment image; this parser only knows
// `--name value`, `--name=value` and bare `--flag`, and reports the first
// option nobody asked for, so a typo never silently runs the default.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace geops::bench {

class Args {
 public:
  // `flags` are the options that take no value.
  static absl::StatusOr<Args> Parse(const std::vector<std::string>& argv,
                                    const std::set<std::string>& flags);

  bool Has(const std::string& name);
  std::string Str(const std::string& name, const std::string& fallback);
  absl::StatusOr<int64_t> Int(const std::string& name, int64_t fallback, int64_t lo, int64_t hi);
  absl::StatusOr<double> Seconds(const std::string& name, double fallback);
  // A comma-separated list of byte sizes ("64,4K,1MiB"); empty: `fallback`.
  absl::StatusOr<std::vector<uint64_t>> Sizes(const std::string& name,
                                              const std::vector<uint64_t>& fallback);

  // The first option given but never read: call after reading them all.
  absl::Status CheckAllUsed() const;

 private:
  std::map<std::string, std::string> values_;
  std::set<std::string> used_;
};

// "4096", "4K", "4KiB", "1M", "16MiB" (binary multiples) -> bytes.
absl::StatusOr<uint64_t> ParseBytes(const std::string& text);
// 1048576 -> "1MiB", 1000 -> "1000".
std::string FormatBytes(uint64_t bytes);

// Splits a shell-like word list (blanks only, no quoting) for options that
// travel in one environment variable.
std::vector<std::string> SplitWords(const std::string& text);

}  // namespace geops::bench
