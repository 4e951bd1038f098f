// The WAN policy a master worker sends with the update rule, so that every
// server of the cluster applies the same one (see RuleSpec).
#pragma once

#include "core/base/config.h"
#include "core/wire/control.h"

namespace geops {

// `rule` with the policy of the master worker's own variables, when any of
// them was given; otherwise unchanged (each server keeps its own).
inline RuleSpec WithWanPolicy(RuleSpec rule, const Config& c) {
  if (!c.wan_policy_given) return rule;
  rule.policy_set = true;
  rule.wan_topk = c.wan_topk;
  rule.wan_topk_min_elems = static_cast<uint64_t>(c.wan_topk_min_elems);
  rule.wan_dtype = c.wan_precision == Config::WanPrecision::kFloat16    ? DType::kFloat16
                   : c.wan_precision == Config::WanPrecision::kBFloat16 ? DType::kBFloat16
                                                                        : DType::kNone;
  rule.wan_mixed = c.wan_mixed;
  rule.wan_staleness = static_cast<uint32_t>(c.wan_staleness);
  rule.hfa_k2 = c.hfa ? static_cast<uint32_t>(c.hfa_k2) : 0;
  return rule;
}

}  // namespace geops
