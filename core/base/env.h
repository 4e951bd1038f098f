// Reading one environment variable: every parser of DMLC_*/GEOPS_*/MXNET_*
// variables (Config, the example trainers) reports a bad value the same way,
// `NAME="value": expected ...`, and treats a variable set to the empty
// string as unset, as ps-lite does. Header-only: the trainer library, which
// has no network, uses it too.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"

namespace geops {

// Where variables come from: the process environment, or a map in tests.
using EnvLookup = std::function<std::optional<std::string>(std::string_view name)>;

namespace env {

inline absl::Status Bad(std::string_view name, std::string_view value,
                        std::string_view expected) {
  return absl::InvalidArgumentError(
      absl::StrFormat("%s=\"%s\": expected %s", name, value, expected));
}

// The value without surrounding blanks; nullopt when unset or empty.
inline std::optional<std::string> Get(const EnvLookup& env, std::string_view name) {
  auto v = env(name);
  if (!v || v->empty()) return std::nullopt;
  return std::string(absl::StripAsciiWhitespace(*v));
}

// An integer in lo..hi; `fallback` when unset, or an error saying why the
// variable is needed when there is none.
template <typename Int>
absl::StatusOr<Int> GetInt(const EnvLookup& env, std::string_view name, Int lo, Int hi,
                           std::optional<std::type_identity_t<Int>> fallback,
                           std::string_view why_needed = "") {
  auto v = Get(env, name);
  if (!v) {
    if (fallback) return *fallback;
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s is not set: expected an integer in %d..%d (%s)", name, lo, hi, why_needed));
  }
  Int out = 0;
  if (!absl::SimpleAtoi(*v, &out) || out < lo || out > hi) {
    return Bad(name, *v, absl::StrFormat("an integer in %d..%d", lo, hi));
  }
  return out;
}

// 1/true/yes or 0/false/no; `fallback` when unset.
inline absl::StatusOr<bool> GetBool(const EnvLookup& env, std::string_view name,
                                    bool fallback = false) {
  auto v = Get(env, name);
  if (!v) return fallback;
  std::string s = absl::AsciiStrToLower(*v);
  if (s == "1" || s == "true" || s == "yes") return true;
  if (s == "0" || s == "false" || s == "no") return false;
  return Bad(name, *v, "0 or 1");
}

inline absl::StatusOr<absl::Duration> GetSeconds(const EnvLookup& env, std::string_view name,
                                                 absl::Duration fallback) {
  auto v = Get(env, name);
  if (!v) return fallback;
  double s = 0;
  if (!absl::SimpleAtod(*v, &s) || !(s > 0) || s > 86400) {
    return Bad(name, *v, "a number of seconds in (0, 86400]");
  }
  return absl::Seconds(s);
}

}  // namespace env
}  // namespace geops
