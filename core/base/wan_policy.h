// WanPolicy: what the WAN tier does to a party's sums and their results
// (top-k with error feedback, 16-bit transfer, MixedSync, HFA).
//
// One value from the environment to the servers that apply it: Config
// parses it (core/base/config.h), a master worker sends it with the update
// rule (RuleSpec, core/wire/control.h), and party and global servers adopt
// it (core/kv). Config and RuleSpec both derive from it, so every field has
// one name and one default wherever it travels; RuleSpec's encoding writes
// these fields in this order.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/base/defaults.h"
#include "core/base/dtype.h"

namespace geops {

struct WanPolicy {
  // GEOPS_WAN_TOPK: the fraction of each float32 key a party server sends up
  // and a global server sends down, the rest kept as a residual (error
  // feedback); 0: dense.
  double wan_topk = 0;
  // MXNET_KVSTORE_SIZE_LOWER_BOUND: smaller keys (in elements) go dense.
  uint64_t wan_topk_min_elems = defaults::kWanTopkMinElems;
  // GEOPS_WAN_DTYPE: kFloat16 or kBFloat16, float32 sums (and their
  // results) cross the WAN in 16 bits, rounded to nearest even; kNone: as
  // they are.
  DType wan_dtype = DType::kNone;
  // GEOPS_WAN_SYNC=mixed: the global servers apply each party's sum as it
  // arrives, a party at most `wan_staleness` rounds (GEOPS_WAN_STALENESS)
  // ahead of the slowest.
  bool wan_mixed = false;
  uint32_t wan_staleness = defaults::kWanStaleness;
  // MXNET_KVSTORE_USE_HFA=1: every hfa_k2-th party round
  // (MXNET_KVSTORE_HFA_K2) is also global; 0: HFA off.
  uint32_t hfa_k2 = 0;

  // The policy alone, without the fields of what derives from it.
  const WanPolicy& wan_policy() const { return *this; }
  void set_wan_policy(const WanPolicy& p) { *this = p; }
  // The element type of top-k containers and 16-bit transfers: the WAN
  // dtype when it is a 16-bit one, else float32.
  DType wan_container_dtype() const {
    return wan_dtype == DType::kFloat16 || wan_dtype == DType::kBFloat16 ? wan_dtype
                                                                         : DType::kFloat32;
  }
  // Top-k compresses a value of `bytes` in `dtype`: float32 keys of at
  // least wan_topk_min_elems elements, when top-k is on.
  bool wan_topk_applies(DType dtype, size_t bytes) const {
    const uint64_t min_elems = wan_topk_min_elems > 0 ? wan_topk_min_elems : 1;
    return wan_topk > 0 && dtype == DType::kFloat32 && bytes / sizeof(float) >= min_elems;
  }
};

}  // namespace geops
