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
  rule.set_wan_policy(c.wan_policy());
  return rule;
}

}  // namespace geops
