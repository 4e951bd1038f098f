// TierNode: a server's or a worker's membership in one tier. It registers
// with the tier's scheduler, waits for the node table, speaks in barriers,
// heartbeats and leaves (or aborts) the tier; the data messages it receives
// go to one handler (a KVClient or a KVServer). The scheduler's side of the
// same protocol is TierScheduler.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/cluster/tier.h"

namespace geops {

class TierNode : public Tier {
 public:
  using DataHandler = std::function<void(Message&&)>;

  // options.role is kServer or kWorker. The transport is the caller's, made
  // from options.transport (core/node/open_tier.h), or an InProcTransport in
  // unit tests: the cluster layer never picks one itself.
  static std::unique_ptr<TierNode> Create(TierOptions options,
                                          std::unique_ptr<Transport> transport);
  ~TierNode() override;

  // Called on the receive thread for every DATA / SET_RULE message. Set
  // before Start().
  void set_data_handler(DataHandler h) { data_handler_ = std::move(h); }
  // Runs first thing in Stop(), while the tier can still send: for helpers
  // with threads of their own that call into the tier.
  void add_stop_handler(std::function<void()> h) { stop_handlers_.push_back(std::move(h)); }
  // Runs on the receive thread when it has handled messages and finds no
  // more waiting (a server sends what it batched). Set before Start().
  void set_idle_handler(std::function<void()> h) { idle_handler_ = std::move(h); }
  const std::optional<absl::Duration>& resend_after() const { return options_.resend_after; }
  int64_t slice_elems() const { return options_.slice_elems; }

  // This node's registration record; adjust before Start().
  NodeInfo& mutable_self() { return options_.self; }

  // Listens, registers and waits for the node table.
  absl::Status Start();

  // Blocks until every live member of `group` (bit mask of group::*) has
  // entered the same barrier.
  absl::Status Barrier(uint32_t group_mask);

  // Sends to msg.header.recipient; fills in the sender.
  absl::Status Send(Message msg);

  // Server: blocks until the scheduler says every worker has exited.
  absl::Status WaitTerminate();
  // Leaves the tier (EXIT, then waits for the scheduler's ack).
  absl::Status Finalize();

  void Stop() override;

  // Stops the whole tier: every node's abort handler runs with `reason`.
  void Abort(const std::string& reason);
  // For a node whose Start() was never called because something else of
  // its process failed first: registers just long enough to have the
  // scheduler stop every node of the tier with `reason`, so that none of
  // them waits out its start-up timeout. Best effort; returns at once.
  void AbortUnstarted(const std::string& reason);

 private:
  // The key variable of this tier, for errors of a tcp tier that may run
  // CURVE (" (GEOPS_GLOBAL_KEYFILE)"); empty on rdma.
  std::string KeyHint() const;
  TierNode(TierOptions options, std::unique_ptr<Transport> transport);

  void Handle(Message&& msg) override;
  // One handler per command a node accepts.
  void OnRegisterAck();
  void OnNodeTable(const Message& msg);
  void OnBarrierDone();
  void OnTerminate();
  void OnShutdown();
  void OnAbort(const Message& msg);
  void OnData(Message&& msg);  // DATA, SET_RULE, STATS, GET_RULE: the data handler's

  // False (and counted, logged) when `msg` may not be accepted from where
  // it came.
  bool AcceptedLocked(const Message& msg);
  void HeartbeatLoop();

  DataHandler data_handler_;
  std::vector<std::function<void()>> stop_handlers_;
  std::function<void()> idle_handler_;

  // Guarded by mu_.
  bool registered_ = false;      // REGISTER_ACK received
  bool start_called_ = false;    // Start() or AbortUnstarted() ran: registration is spoken for
  bool terminated_ = false;      // TERMINATE received (servers)
  bool exit_acked_ = false;      // SHUTDOWN received after our EXIT
  uint64_t barrier_generation_ = 0;
  std::vector<Message> early_data_;  // data that beat the node table here
  size_t early_bytes_ = 0;           // their payload

  std::atomic<int64_t> last_heard_scheduler_ns_{0};
  std::thread heartbeat_;
};

}  // namespace geops
