// The WAN tier's variables: how a party server sends its sums
// (coalescing, P3, slicing of big keys) and the WAN policy
// (core/base/wan_policy.h). Two steps of ParseConfig.
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/strip.h"
#include "core/base/config_wan.h"

namespace geops::config_internal {
namespace {

using env::Bad;
using env::Get;
using env::GetBool;
using env::GetInt;

// GEOPS_WAN_DTYPE.
absl::Status ParseWanDType(const EnvLookup& env, Config& c) {
  auto v = Get(env, "GEOPS_WAN_DTYPE");
  if (!v) return absl::OkStatus();
  std::string d = absl::AsciiStrToLower(*v);
  if (d == "float32" || d == "fp32") c.wan_dtype = DType::kNone;
  else if (d == "float16" || d == "fp16") c.wan_dtype = DType::kFloat16;
  else if (d == "bfloat16" || d == "bf16") c.wan_dtype = DType::kBFloat16;
  else return Bad("GEOPS_WAN_DTYPE", *v, "float32, float16 (fp16) or bfloat16 (bf16)");
  return absl::OkStatus();
}

// GEOPS_WAN_TOPK and MXNET_KVSTORE_SIZE_LOWER_BOUND.
absl::Status ParseTopK(const EnvLookup& env, Config& c) {
  if (auto v = Get(env, "GEOPS_WAN_TOPK")) {
    absl::string_view t = *v;
    const bool percent = absl::ConsumeSuffix(&t, "%");
    double d = 0;
    if (!absl::SimpleAtod(t, &d) || !(d > 0)) d = -1;
    if (percent) d /= 100;
    if (!(d >= 0.0001 && d <= 1)) {
      return Bad("GEOPS_WAN_TOPK", *v,
                 "the fraction of each key sent over the WAN, 0.0001..1 or 0.01%..100% (e.g. 1%)");
    }
    c.wan_topk = d;
  }
  auto lb = GetInt(env, "MXNET_KVSTORE_SIZE_LOWER_BOUND", 0, INT32_MAX,
                   static_cast<int>(c.wan_topk_min_elems), "");
  if (!lb.ok()) return lb.status();
  c.wan_topk_min_elems = static_cast<uint64_t>(*lb);
  return absl::OkStatus();
}

// GEOPS_WAN_SYNC and GEOPS_WAN_STALENESS.
absl::Status ParseMixedSync(const EnvLookup& env, Config& c) {
  if (auto v = Get(env, "GEOPS_WAN_SYNC")) {
    std::string m = absl::AsciiStrToLower(*v);
    if (m == "sync" || m == "full") c.wan_mixed = false;
    else if (m == "mixed" || m == "async") c.wan_mixed = true;
    else return Bad("GEOPS_WAN_SYNC", *v, "sync (every round waits for every party) or mixed");
  }
  auto stale = GetInt(env, "GEOPS_WAN_STALENESS", 0, 1000000,
                      static_cast<int>(c.wan_staleness), "");
  if (!stale.ok()) return stale.status();
  c.wan_staleness = static_cast<uint32_t>(*stale);
  return absl::OkStatus();
}

// MXNET_KVSTORE_USE_HFA and its K1, K2.
absl::Status ParseHfa(const EnvLookup& env, Config& c) {
  auto hfa = GetBool(env, "MXNET_KVSTORE_USE_HFA");
  if (!hfa.ok()) return hfa.status();
  c.hfa = *hfa;
  auto k1 = GetInt(env, "MXNET_KVSTORE_HFA_K1", 1, 1000000, c.hfa_k1, "");
  if (!k1.ok()) return k1.status();
  c.hfa_k1 = *k1;
  auto k2 = GetInt(env, "MXNET_KVSTORE_HFA_K2", 1, 1000000, defaults::kHfaK2, "");
  if (!k2.ok()) return k2.status();
  c.hfa_k2 = c.hfa ? static_cast<uint32_t>(*k2) : 0;
  return absl::OkStatus();
}

}  // namespace

// How a party server sends its sums: coalescing, P3 and its window, and
// the slicing of big keys over the global servers.
absl::Status ParseWanTransfer(const EnvLookup& env, Config& c) {
  auto cb = GetInt(env, "GEOPS_WAN_COALESCE_BYTES", 0, 64 << 20,
                   static_cast<int>(c.wan_coalesce_bytes), "");
  if (!cb.ok()) return cb.status();
  c.wan_coalesce_bytes = static_cast<size_t>(*cb);
  auto cu = GetInt(env, "GEOPS_WAN_COALESCE_US", 0, 1000000,
                   static_cast<int>(absl::ToInt64Microseconds(c.wan_coalesce_delay)), "");
  if (!cu.ok()) return cu.status();
  c.wan_coalesce_delay = absl::Microseconds(*cu);
  // Read here, in the order the variables were always checked in.
  if (auto s = ParseWanDType(env, c); !s.ok()) return s;
  auto p3 = GetBool(env, "ENABLE_P3");
  if (!p3.ok()) return p3.status();
  c.wan_priority = *p3;
  auto win = GetInt(env, "GEOPS_WAN_WINDOW_KB", 16, 4 << 20,
                    static_cast<int>(c.wan_window_bytes >> 10), "");
  if (!win.ok()) return win.status();
  c.wan_window_bytes = static_cast<size_t>(*win) << 10;
  auto bb = GetInt(env, "MXNET_KVSTORE_BIGARRAY_BOUND", 0, INT32_MAX,
                   static_cast<int>(c.bigarray_bound), "");
  if (!bb.ok()) return bb.status();
  c.bigarray_bound = *bb;
  return absl::OkStatus();
}

// The WAN policy a master worker sends to every server (core/base/wan_policy.h).
absl::Status ParseWanPolicy(const EnvLookup& env, Config& c) {
  if (auto s = ParseTopK(env, c); !s.ok()) return s;
  if (auto s = ParseMixedSync(env, c); !s.ok()) return s;
  if (auto s = ParseHfa(env, c); !s.ok()) return s;
  for (const char* v : {"GEOPS_WAN_TOPK", "GEOPS_WAN_DTYPE", "GEOPS_WAN_SYNC", "GEOPS_WAN_STALENESS",
                        "MXNET_KVSTORE_SIZE_LOWER_BOUND", "MXNET_KVSTORE_USE_HFA",
                        "MXNET_KVSTORE_HFA_K2"}) {
    c.wan_policy_given |= Get(env, v).has_value();
  }
  if (c.hfa && c.wan_mixed) {
    return Bad("GEOPS_WAN_SYNC", "mixed",
               "sync with MXNET_KVSTORE_USE_HFA=1: HFA's global aggregations are synchronous");
  }
  return absl::OkStatus();
}

}  // namespace geops::config_internal
