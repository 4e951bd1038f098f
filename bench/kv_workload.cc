#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "bench/kv_bench.h"

namespace geops::bench {

const char* KvModeName(KvMode m) {
  switch (m) {
    case KvMode::kPush: return "push";
    case KvMode::kPull: return "pull";
    case KvMode::kPushPull: return "pushpull";
  }
  return "?";
}

absl::StatusOr<KvWorkload> ParseWorkload(Args& args) {
  KvWorkload w;
  std::string mode = args.Str("mode", KvModeName(w.mode));
  if (mode == "push") w.mode = KvMode::kPush;
  else if (mode == "pull") w.mode = KvMode::kPull;
  else if (mode == "pushpull") w.mode = KvMode::kPushPull;
  else return absl::InvalidArgumentError("--mode \"" + mode + "\": expected push, pull or pushpull");

  std::vector<uint64_t> sweep;
  for (uint64_t b = 4 << 10; b <= (4u << 20); b *= 4) sweep.push_back(b);
  auto sizes = args.Sizes("value-bytes", sweep);
  if (!sizes.ok()) return sizes.status();
  for (uint64_t s : *sizes) {
    if (s % sizeof(float) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--value-bytes: ", s, " is not a whole number of float32 values"));
    }
  }
  w.value_bytes = *sizes;
  auto keys = args.Int("keys-per-server", w.keys_per_server, 1, 100000);
  if (!keys.ok()) return keys.status();
  w.keys_per_server = static_cast<int>(*keys);
  auto iters = args.Int("iters", w.iters, 1, 1 << 30);
  if (!iters.ok()) return iters.status();
  w.iters = *iters;
  auto max = args.Sizes("max-bytes", {w.max_bytes});
  if (!max.ok()) return max.status();
  w.max_bytes = max->front();
  return w;
}

std::string WorkloadArgs(const KvWorkload& w) {
  std::vector<std::string> sizes;
  for (uint64_t s : w.value_bytes) sizes.push_back(absl::StrCat(s));
  return absl::StrCat("--mode ", KvModeName(w.mode), " --value-bytes ", absl::StrJoin(sizes, ","),
                      " --keys-per-server ", w.keys_per_server, " --iters ", w.iters,
                      " --max-bytes ", w.max_bytes);
}

int64_t Iterations(const KvWorkload& w, uint64_t value_bytes, int num_servers) {
  uint64_t per_iter = value_bytes * w.keys_per_server * num_servers;
  return std::clamp<int64_t>(static_cast<int64_t>(w.max_bytes / per_iter), 1, w.iters);
}

}  // namespace geops::bench
