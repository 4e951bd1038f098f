// The default of every tunable, in one place. Config starts from these
// before it reads the environment, and the tier and transport option
// structs start from them too, so a program that builds options by hand
// gets the same behaviour as the geops executable.
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/time/time.h"

namespace geops::defaults {

inline constexpr absl::Duration kHeartbeatInterval = absl::Seconds(1);
// Silence after which a peer is reported dead (GEOPS_HEARTBEAT_TIMEOUT).
inline constexpr absl::Duration kHeartbeatTimeout = absl::Seconds(15);
// How long a tier may take to assemble (GEOPS_STARTUP_TIMEOUT); also how long
// a transport keeps trying to open one connection (peers start in any order).
inline constexpr absl::Duration kStartupTimeout = absl::Seconds(300);
// How long a node waits for its scheduler to acknowledge registration
// (GEOPS_CONNECT_TIMEOUT).
inline constexpr absl::Duration kConnectTimeout = absl::Seconds(30);
inline constexpr absl::Duration kResendTimeout = absl::Seconds(1);  // PS_RESEND_TIMEOUT
inline constexpr size_t kMaxMessageBytes = size_t{256} << 20;      // GEOPS_MAX_MESSAGE_MB
inline constexpr size_t kRdmaMemLimit = size_t{2} << 30;           // GEOPS_RDMA_MEM_LIMIT
inline constexpr size_t kRdmaSlotBytes = 16 * 1024;                // GEOPS_RDMA_SLOT_BYTES
inline constexpr int64_t kBigarrayBound = 1000000;  // MXNET_KVSTORE_BIGARRAY_BOUND

// The WAN tier. How a party server batches its sums (GEOPS_WAN_COALESCE_BYTES,
// GEOPS_WAN_COALESCE_US) and P3's window (GEOPS_WAN_WINDOW_KB).
inline constexpr size_t kWanCoalesceBytes = size_t{64} << 10;
inline constexpr absl::Duration kWanCoalesceDelay = absl::Milliseconds(1);
inline constexpr size_t kWanWindowBytes = size_t{8} << 20;
// The WAN policy (core/base/wan_policy.h): keys below this many elements go
// dense (MXNET_KVSTORE_SIZE_LOWER_BOUND, GeoMX's default); MixedSync's
// bound in rounds (GEOPS_WAN_STALENESS).
inline constexpr uint64_t kWanTopkMinElems = 200000;
inline constexpr uint32_t kWanStaleness = 2;
// HFA: local steps per party round (MXNET_KVSTORE_HFA_K1) and party rounds
// per global round (MXNET_KVSTORE_HFA_K2).
inline constexpr int kHfaK1 = 20;
inline constexpr int kHfaK2 = 10;

// Durable state: with GEOPS_CHECKPOINT_DIR and no cadence given, a
// checkpoint every this long (GEOPS_CHECKPOINT_SECONDS); files kept per
// server (GEOPS_CHECKPOINT_KEEP).
inline constexpr absl::Duration kCheckpointEvery = absl::Seconds(300);
inline constexpr int kCheckpointKeep = 3;

}  // namespace geops::defaults
