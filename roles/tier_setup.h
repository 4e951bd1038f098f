// Shared by the roles: a TierOptions from the Config, and the per-tier
// stats line every process prints when it ends.
#pragma once

#include "core/base/config.h"
#include "core/cluster/tier.h"

namespace geops {

TierOptions MakeTierOptions(const Config& c, bool global, TierRole role);
void PrintTierStats(const Config& c, const Tier& tier);

}  // namespace geops
