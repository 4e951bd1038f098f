// Steps of ParseConfig (core/base/config.cc) that live in files of their
// own (the WAN tier's, durable state's); nothing else calls them.
#pragma once

#include "absl/status/status.h"
#include "core/base/config.h"

namespace geops::config_internal {

// GEOPS_WAN_COALESCE_BYTES, GEOPS_WAN_COALESCE_US, GEOPS_WAN_DTYPE, ENABLE_P3,
// GEOPS_WAN_WINDOW_KB, MXNET_KVSTORE_BIGARRAY_BOUND, in that order.
absl::Status ParseWanTransfer(const EnvLookup& env, Config& c);
// GEOPS_WAN_TOPK, MXNET_KVSTORE_SIZE_LOWER_BOUND, GEOPS_WAN_SYNC,
// GEOPS_WAN_STALENESS, MXNET_KVSTORE_USE_HFA and its K1, K2.
absl::Status ParseWanPolicy(const EnvLookup& env, Config& c);
// GEOPS_CHECKPOINT_DIR, GEOPS_CHECKPOINT_ROUNDS, GEOPS_CHECKPOINT_SECONDS,
// GEOPS_CHECKPOINT_KEEP (core/base/config_durable.cc).
absl::Status ParseCheckpoints(const EnvLookup& env, Config& c);

}  // namespace geops::config_internal
