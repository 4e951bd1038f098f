// Config: the DMLC_* environment of GeoMX / ps-lite, parsed once into types.
//
// Every check happens here, at start-up, so that a bad launch script fails
// in the first millisecond with one line naming the variable, its value and
// what was expected, instead of hanging at registration.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "core/base/defaults.h"
#include "core/base/env.h"
#include "core/base/link.h"
#include "core/base/role.h"
#include "core/base/wan_policy.h"
#include "absl/time/time.h"

namespace geops {

// Where one tier's scheduler is and how many nodes it waits for.
struct TierConfig {
  std::string scheduler_host;  // as given (IP or host name)
  std::string scheduler_addr;  // its IPv4 address: what we bind or connect to
  int scheduler_port = 0;
  int num_servers = 0;
  int num_workers = 0;
};

// The WAN policy's fields (core/base/wan_policy.h) are Config's own: parsed
// here once, sent by a master worker as they are.
struct Config : WanPolicy {
  // The role in the party's (local) tier; empty for a process that is only
  // the global scheduler. And the role in the global tier, if any: the
  // global scheduler, a global server, or a party's server as the global
  // servers' client (Role::kWorker).
  std::optional<Role> role;
  std::optional<Role> global_role;
  bool master_worker = false;
  std::optional<TierConfig> local;
  std::optional<TierConfig> global;
  int num_all_workers = 0;  // 0: not given
  bool enable_central_worker = false;
  bool enable_central_worker_set = false;  // the variable was given (0 or 1)
  // Names this process's party in logs (GEOPS_PARTY; default: its local
  // scheduler's host:port, the same for every process of the party).
  std::string party;
  int verbose = 0;
  // Address this node listens on and advertises.
  std::string node_host = "127.0.0.1";
  int port = 0;  // 0: ephemeral
  VanType local_van = VanType::kTcp;
  size_t rdma_mem_limit = defaults::kRdmaMemLimit;    // GEOPS_RDMA_MEM_LIMIT (MiB in env)
  size_t rdma_slot_bytes = defaults::kRdmaSlotBytes;  // GEOPS_RDMA_SLOT_BYTES
  absl::Duration heartbeat_interval = defaults::kHeartbeatInterval;
  absl::Duration heartbeat_timeout = defaults::kHeartbeatTimeout;
  // The global tier's own (GEOPS_GLOBAL_HEARTBEAT_TIMEOUT): WAN links stall
  // longer than a rack before they are really gone. Default: the local one.
  absl::Duration global_heartbeat_timeout = defaults::kHeartbeatTimeout;
  absl::Duration startup_timeout = defaults::kStartupTimeout;
  // How long a node waits for its scheduler to acknowledge registration
  // before it reports the scheduler missing (GEOPS_CONNECT_TIMEOUT).
  absl::Duration connect_timeout = defaults::kConnectTimeout;
  // Resend of unanswered requests (PS_RESEND, PS_RESEND_TIMEOUT): servers
  // drop the duplicates, so a tcp connection that was reset mid-round loses
  // nothing and counts nothing twice. Default: on for the global tier only.
  bool resend_local = false;
  bool resend_global = true;
  absl::Duration resend_timeout = defaults::kResendTimeout;
  // Largest frame a tcp peer may send us (GEOPS_MAX_MESSAGE_MB).
  size_t max_message_bytes = defaults::kMaxMessageBytes;
  // CURVE on a tcp tier: GEOPS_GLOBAL_KEYFILE / GEOPS_LOCAL_KEYFILE.
  std::optional<CurveKeys> global_keys;
  std::optional<CurveKeys> local_keys;
  // The rdma tier's shared secret (GEOPS_RDMA_SECRET_FILE); empty: none.
  std::string rdma_secret;
  // How a party server batches its sums for the WAN (GEOPS_WAN_COALESCE_BYTES,
  // GEOPS_WAN_COALESCE_US); see core/kv/wan_uplink.h.
  size_t wan_coalesce_bytes = defaults::kWanCoalesceBytes;
  absl::Duration wan_coalesce_delay = defaults::kWanCoalesceDelay;
  // P3 (ENABLE_P3) and its window (GEOPS_WAN_WINDOW_KB).
  bool wan_priority = false;
  size_t wan_window_bytes = defaults::kWanWindowBytes;
  // Hierarchical frequency aggregation (MXNET_KVSTORE_USE_HFA): workers take
  // hfa_k1 local steps per party-level aggregation (MXNET_KVSTORE_HFA_K1, read
  // by training programs); every hfa_k2-th party-level aggregation is also
  // global (the policy's hfa_k2). Party servers average their workers'
  // models on the rounds that stay in the party.
  bool hfa = false;
  int hfa_k1 = defaults::kHfaK1;
  // Any of the WAN policy's variables was given: a master worker then
  // sends the policy to every server with the rule (WithWanPolicy).
  bool wan_policy_given = false;
  // Keys of at least this many elements are spread over all global servers
  // (MXNET_KVSTORE_BIGARRAY_BOUND, as in GeoMX/MXNet); 0: never.
  int64_t bigarray_bound = defaults::kBigarrayBound;
  // Durable state of a top server (GEOPS_CHECKPOINT_*; see
  // core/kv/checkpointer.h): where, and every so many rounds or seconds.
  // Empty dir: none.
  std::string checkpoint_dir;
  uint64_t checkpoint_rounds = 0;
  absl::Duration checkpoint_every = absl::ZeroDuration();
  int checkpoint_keep = defaults::kCheckpointKeep;
  // Things worth saying once at start-up (GeoMX variables geops ignores).
  std::vector<std::string> warnings;

  bool in_local_tier() const { return role.has_value(); }
  bool in_global_tier() const { return global_role.has_value(); }
  // A server that applies the rule: a global server, or a single tier's.
  bool top_server() const {
    return global_role == Role::kServer || (!in_global_tier() && role == Role::kServer);
  }
  // A one-line description for logs, e.g. "server+global_server".
  std::string Describe() const;
};

// Reads the process environment.
EnvLookup ProcessEnv();

// Parses and cross-checks every variable; InvalidArgument names the first
// offending variable as `NAME="value": expected ...`.
absl::StatusOr<Config> ParseConfig(const EnvLookup& env);

// The text of `geops --help`: every variable, its meaning and its default.
std::string ConfigHelp();

}  // namespace geops
