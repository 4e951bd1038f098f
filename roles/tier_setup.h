// The per-tier stats line every geops process prints when it ends; the
// launcher adds them up.
#pragma once

#include "core/base/config.h"
#include "core/cluster/tier.h"

namespace geops {

void PrintTierStats(const Config& c, const Tier& tier);

}  // namespace geops
