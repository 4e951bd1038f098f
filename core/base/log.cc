#include "core/base/log.h"

#include <atomic>
#include <cstdio>
#include <mutex>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace geops::log {
namespace {

std::atomic<int> g_verbosity{0};

std::mutex& NameMutex() {
  static std::mutex m;
  return m;
}
std::string& Name() {
  static std::string name = "geops";
  return name;
}

}  // namespace

void SetVerbosity(int level) { g_verbosity.store(level, std::memory_order_relaxed); }
int Verbosity() { return g_verbosity.load(std::memory_order_relaxed); }

void SetName(std::string name) {
  std::lock_guard<std::mutex> lock(NameMutex());
  Name() = std::move(name);
}

void Write(std::string_view severity, std::string_view text) {
  std::string line;
  {
    std::lock_guard<std::mutex> lock(NameMutex());
    line = absl::StrFormat("%s %s [%s] %s\n", severity,
                           absl::FormatTime("%H:%M:%E3S", absl::Now(), absl::UTCTimeZone()),
                           Name(), text);
  }
  // One fwrite per line keeps lines whole when several threads log.
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace geops::log
