// Links the installed library and exercises its public headers: parses a
// config from a map and round-trips a message through the codec.
#include <cstdio>

#include "core/base/config.h"
#include "core/kv/kv_worker.h"
#include "core/wire/codec.h"

int main() {
  auto cfg = geops::ParseConfig([](std::string_view name) -> std::optional<std::string> {
    if (name == "DMLC_ROLE") return "worker";
    if (name == "DMLC_PS_ROOT_URI") return "127.0.0.1";
    if (name == "DMLC_PS_ROOT_PORT") return "9000";
    if (name == "DMLC_NUM_SERVER" || name == "DMLC_NUM_WORKER") return "1";
    return std::nullopt;
  });
  if (!cfg.ok()) return 1;
  geops::Message m;
  m.header.command = geops::Command::kBarrier;
  auto back = geops::wire::DecodeFlat(geops::wire::EncodeFlat(m));
  if (!back.ok() || back->header.command != geops::Command::kBarrier) return 1;
  std::puts("consumer ok");
  return 0;
}
