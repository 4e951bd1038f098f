// Durable state's variables (GEOPS_CHECKPOINT_*): one step of ParseConfig.
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_format.h"
#include "core/base/config_wan.h"

namespace geops::config_internal {

using env::Bad;
using env::Get;
using env::GetInt;
using env::GetSeconds;

absl::Status ParseCheckpoints(const EnvLookup& env, Config& c) {
  auto dir = Get(env, "GEOPS_CHECKPOINT_DIR");
  auto rounds = GetInt<int64_t>(env, "GEOPS_CHECKPOINT_ROUNDS", 0, int64_t{1} << 40, 0);
  if (!rounds.ok()) return rounds.status();
  auto every = GetSeconds(env, "GEOPS_CHECKPOINT_SECONDS", absl::ZeroDuration());
  if (!every.ok()) return every.status();
  auto keep = GetInt(env, "GEOPS_CHECKPOINT_KEEP", 1, 1000, c.checkpoint_keep);
  if (!keep.ok()) return keep.status();
  if (!dir || dir->empty()) {
    for (const char* name : {"GEOPS_CHECKPOINT_ROUNDS", "GEOPS_CHECKPOINT_SECONDS"}) {
      if (auto v = Get(env, name)) {
        return Bad(name, *v, "unset, or GEOPS_CHECKPOINT_DIR set too (where checkpoints go)");
      }
    }
    return absl::OkStatus();
  }
  c.checkpoint_rounds = static_cast<uint64_t>(*rounds);
  c.checkpoint_every = *every;
  c.checkpoint_keep = *keep;
  if (c.checkpoint_rounds == 0 && c.checkpoint_every == absl::ZeroDuration()) {
    c.checkpoint_every = defaults::kCheckpointEvery;
  }
  c.checkpoint_dir = *dir;
  // Only the servers that write checkpoints need the directory; the others
  // may run on machines that do not have it.
  if (!c.top_server()) return absl::OkStatus();
  if (::mkdir(dir->c_str(), 0755) != 0 && errno != EEXIST) {
    return Bad("GEOPS_CHECKPOINT_DIR", *dir,
               absl::StrFormat("a directory this process can create or write (mkdir: %s)",
                               std::strerror(errno)));
  }
  struct stat st {};
  if (::stat(dir->c_str(), &st) != 0 || !S_ISDIR(st.st_mode) ||
      ::access(dir->c_str(), W_OK | X_OK) != 0) {
    return Bad("GEOPS_CHECKPOINT_DIR", *dir, "a directory this process can write");
  }
  return absl::OkStatus();
}

}  // namespace geops::config_internal
