// Bodies of membership messages (REGISTER, NODE_TABLE, BARRIER, ABORT,
// SET_RULE). They travel as segment 0 of a control Message; parsing is
// bounds-checked like the header.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/base/buffer.h"
#include "core/base/role.h"
#include "core/base/wan_policy.h"
#include "core/wire/message.h"

namespace geops {


struct NodeInfo {
  int32_t id = 0;           // assigned by the scheduler
  Role role = Role::kWorker;
  int32_t rank = 0;         // index among the nodes of the same role
  std::string host;
  int32_t port = 0;
  // The party (data centre) a global-tier worker belongs to, named by its
  // local scheduler's address; the global servers count one contribution
  // per party.
  std::string party;
  // How logs name the node's party (GEOPS_PARTY, or its scheduler's address).
  std::string party_name;
  // Servers are ranked by this hint first, so that a global server holds
  // the same rank (and key range) in the central party as in the global tier.
  int32_t rank_hint = -1;
  bool master = false;      // master worker
  // Contributes gradients every round. Decided by the scheduler for the
  // whole tier when it assigns ids (see AssignIds), so every node reads the
  // same answer from the node table; a registration's value is ignored.
  bool trains = true;
  // This server is a global server (so its tier is the central party's).
  bool global_server = false;
  // DMLC_ENABLE_CENTRAL_WORKER as this node saw it: -1 unset, 0 or 1.
  int8_t central_flag = -1;
  // DMLC_NUM_ALL_WORKER as this node saw it (0: unset); a scheduler refuses
  // a tier whose members disagree.
  int32_t num_all_workers = 0;

  std::string Address() const;
  std::string DebugString() const;
};

// Node ids follow ps-lite: scheduler 1, server rank r -> 8 + 2r,
// worker rank r -> 9 + 2r.
inline constexpr int32_t kSchedulerId = 1;
inline int32_t ServerId(int rank) { return 8 + 2 * rank; }
inline int32_t WorkerId(int rank) { return 9 + 2 * rank; }

// Groups for barriers, as a bit mask.
namespace group {
inline constexpr uint32_t kScheduler = 1;
inline constexpr uint32_t kServers = 2;
inline constexpr uint32_t kWorkers = 4;
inline constexpr uint32_t kAll = 7;
// The group a role belongs to.
inline constexpr uint32_t Of(Role r) {
  return r == Role::kScheduler ? kScheduler : r == Role::kServer ? kServers : kWorkers;
}
}  // namespace group

Buffer EncodeNodeInfo(const NodeInfo& n);
absl::StatusOr<NodeInfo> DecodeNodeInfo(const Buffer& b);
Buffer EncodeNodeTable(const std::vector<NodeInfo>& nodes);
absl::StatusOr<std::vector<NodeInfo>> DecodeNodeTable(const Buffer& b);

Buffer EncodeU32(uint32_t v);
absl::StatusOr<uint32_t> DecodeU32(const Buffer& b);
Buffer EncodeText(const std::string& s);
std::string DecodeText(const Buffer& b);  // any bytes are a valid text

// kAverage: the total divided by `average_over` (the number of workers
// whose values it sums), model averaging as HFA does it.
enum class UpdateRule : uint8_t { kSum = 0, kSgd = 1, kAverage = 2 };
// The rule, and the WAN policy the master worker chose for the whole
// cluster: the global servers apply it and party servers fetch it
// (GET_RULE) before their first sum leaves. policy_set false: every server
// keeps its own variables. Constructed as {rule, learning_rate,
// average_over}, the policy's fields at their defaults.
struct RuleSpec : WanPolicy {
  RuleSpec(UpdateRule r = UpdateRule::kSum, double lr = 0, uint32_t over = 0)
      : rule(r), learning_rate(lr), average_over(over) {}

  UpdateRule rule;
  double learning_rate;
  uint32_t average_over;
  bool policy_set = false;
};
Buffer EncodeRule(const RuleSpec& r);
absl::StatusOr<RuleSpec> DecodeRule(const Buffer& b);

}  // namespace geops
