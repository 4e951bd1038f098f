// The roles of the `geops` executable. Each runs to completion and returns
// the process's status: OK on an orderly shutdown, an error otherwise.
#pragma once

#include "absl/status/status.h"
#include "core/base/config.h"
#include "roles/trainer.h"

namespace geops {

// scheduler (a party's) or global_scheduler, picked from the config.
absl::Status RunScheduler(const Config& config);
// A party's server, a global server, or a single-tier (ps-lite) server.
absl::Status RunServer(const Config& config);
// The built-in synthetic trainer; the master worker when configured.
absl::Status RunTrainer(const Config& config, const TrainerOptions& options);

}  // namespace geops
