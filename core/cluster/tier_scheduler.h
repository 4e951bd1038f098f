// TierScheduler: the scheduler of one tier. It takes the registrations,
// assigns ids and ranks and sends the node table, releases barriers,
// watches every node's heartbeats, and ends the tier: in order when every
// node has exited, or by telling every node why it aborted. The nodes' side
// of the same protocol is TierNode.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/cluster/tier.h"

namespace geops {

class TierScheduler : public Tier {
 public:
  // options.role, host, port, self and the clients' options are not used.
  // The transport is the caller's, as for TierNode::Create.
  static std::unique_ptr<TierScheduler> Create(TierOptions options,
                                               std::unique_ptr<Transport> transport);
  ~TierScheduler() override;

  // Listens and returns; registration completes on the receive thread.
  absl::Status Start();

  // Blocks until every node has exited (OK) or the tier aborted and every
  // node it expected has been told (or the connect timeout, after which a
  // node stops waiting by itself, has passed).
  absl::Status WaitDone();

 private:
  TierScheduler(TierOptions options, std::unique_ptr<Transport> transport);

  // The *Locked functions and IsLive run with mu_ held.
  void Handle(Message&& msg) override;
  // One handler per command a scheduler accepts (HEARTBEAT is answered in
  // Handle: hearing from the node is all it says).
  void OnRegisterLocked(Message&& msg);
  void OnBarrierLocked(const Message& msg);
  void OnExitLocked(const Message& msg);
  void OnAbortReportLocked(const Message& msg);
  // Start-up timeout, and every node's liveness.
  void Tick() override;

  // False (and counted, logged) when `msg` may not be accepted from where
  // it came.
  bool AcceptedLocked(const Message& msg);
  std::string CheckRegistrationLocked(const NodeInfo& n) const;
  void DecideTrainersLocked(std::vector<NodeInfo>& workers, bool central) const;
  void AssignIdsLocked();
  void ReleaseBarriersLocked();
  void BroadcastLocked(Command cmd, const Buffer& body, uint32_t group_mask);
  // The first failure stops every node, those still waiting for a table too.
  void FailAndTellLocked(const std::string& reason);
  bool IsLive(const NodeInfo& n) const;

  // Guarded by mu_.
  struct Pending {
    NodeInfo info;
    uint64_t origin = 0;
    int temp_id = 0;  // send path until the table gives it a real id
  };
  std::vector<Pending> pending_;     // registrations before the table
  int next_temp_id_ = -1;
  std::map<int, absl::Time> last_seen_;
  std::map<int, bool> exited_;
  std::map<uint32_t, std::vector<int>> barrier_waiting_;
  bool terminate_sent_ = false;
  bool done_ = false;  // everyone exited
  absl::Time started_at_;
  absl::Time last_tick_;
  // A scheduler that aborted before its table stays to tell nodes that
  // register late (they would otherwise wait out GEOPS_CONNECT_TIMEOUT).
  absl::Time failed_at_;
  int told_of_abort_ = 0;
};

}  // namespace geops
