// The geops-stats line: what a process moved through one tier, printed on
// stdout once per tier when the process ends. geops-launch and the benches
// read these lines back (report::TierStats) and add them up.
#pragma once

#include "core/base/config.h"
#include "core/cluster/tier.h"

namespace geops {

// Prints `tier`'s counters (and this process's peak memory) as one
// report::TierStats line, flushed at once: a process killed right after
// must not lose it.
void PrintTierStats(const Config& c, const Tier& tier);

}  // namespace geops
