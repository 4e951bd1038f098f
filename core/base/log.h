// Process-wide logging to stderr. The verbosity (PS_VERBOSE) and the name
// that prefixes every line are set once at start-up: a process has one
// stderr and one identity, so this is the one piece of global state.
#pragma once

#include <string>
#include <string_view>

#include "absl/strings/str_format.h"

namespace geops::log {

// 0: errors and the summary only; 1: connections; 2: every message.
void SetVerbosity(int level);
int Verbosity();
void SetName(std::string name);

void Write(std::string_view severity, std::string_view text);

template <typename... Args>
void Info(const absl::FormatSpec<Args...>& fmt, const Args&... args) {
  Write("I", absl::StrFormat(fmt, args...));
}
template <typename... Args>
void Warn(const absl::FormatSpec<Args...>& fmt, const Args&... args) {
  Write("W", absl::StrFormat(fmt, args...));
}
template <typename... Args>
void Error(const absl::FormatSpec<Args...>& fmt, const Args&... args) {
  Write("E", absl::StrFormat(fmt, args...));
}
// Logged only when PS_VERBOSE >= level.
template <typename... Args>
void Verbose(int level, const absl::FormatSpec<Args...>& fmt, const Args&... args) {
  if (Verbosity() >= level) Write("V", absl::StrFormat(fmt, args...));
}

}  // namespace geops::log
