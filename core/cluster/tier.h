// Tier: membership of one process in one tier (a party's local tier, or
// the global tier). It owns that tier's transport and runs registration,
// id assignment, the node-table broadcast, barriers, heartbeats and the
// orderly-shutdown / abort protocol. A process in both tiers (a party's
// server, a global server) simply holds two Tiers.
//
// The scheduler of a tier is a Tier too, with role kScheduler: the two
// sides share the transport, the receive thread, the node table and the
// abort protocol, and differ in what they accept and answer. tier.cc holds
// the common part and the node side, tier_scheduler.cc the scheduler side;
// each command has one handler (On*).
#pragma once

#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/base/config.h"
#include "core/wire/control.h"
#include "core/wire/message.h"
#include "transport/transport.h"

namespace geops {

struct TierOptions {
  std::string name = "local";      // "local" or "global" (stats lines)
  // How logs name this tier: "party A" for a local tier, "global" for the
  // global one, so a message that travels between parties stays readable.
  std::string label = "local";
  Role role = Role::kWorker;
  TierConfig cluster;               // where the scheduler is, how many nodes
  std::string host = "127.0.0.1";  // where this node listens (not schedulers)
  int port = 0;
  NodeInfo self;                    // party, rank_hint, master, trains
  TransportOptions transport;
  absl::Duration heartbeat_interval = defaults::kHeartbeatInterval;
  absl::Duration heartbeat_timeout = defaults::kHeartbeatTimeout;
  absl::Duration startup_timeout = defaults::kStartupTimeout;
  absl::Duration connect_timeout = defaults::kConnectTimeout;  // until REGISTER_ACK
  // Clients of this tier spread keys of at least this many elements over
  // every server, a slice each, when those are global servers
  // (MXNET_KVSTORE_BIGARRAY_BOUND); 0: never.
  int64_t slice_elems = 0;
  // Clients of this tier resend unanswered requests after this long; unset:
  // never (rdma never: a broken queue pair does not come back).
  std::optional<absl::Duration> resend_after;
};

// The options of this process's local (global=false) or global tier, from
// its Config: scheduler address, counts, own address, transport, timeouts.
TierOptions MakeTierOptions(const Config& c, bool global, Role role);

class Tier {
 public:
  using DataHandler = std::function<void(Message&&)>;
  using AbortHandler = std::function<void(const std::string& reason)>;

  static absl::StatusOr<std::unique_ptr<Tier>> Create(TierOptions options);
  // Over a transport of the caller's (options.transport is then ignored):
  // an InProcTransport in unit tests.
  static std::unique_ptr<Tier> Create(TierOptions options, std::unique_ptr<Transport> transport);
  ~Tier();
  Tier(const Tier&) = delete;
  Tier& operator=(const Tier&) = delete;

  // Called on the receive thread for every DATA / SET_RULE message, and
  // (within a poll slice) once after the first abort. Set both before Start().
  void set_data_handler(DataHandler h) { data_handler_ = std::move(h); }
  void add_abort_handler(AbortHandler h) { abort_handlers_.push_back(std::move(h)); }
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

  // Node: listen, register and wait for the node table. Scheduler: listen
  // and return; registration completes on the receive thread.
  absl::Status Start();

  // Blocks until every live member of `group` (bit mask of group::*) has
  // entered the same barrier.
  absl::Status Barrier(uint32_t group_mask);

  // Sends to msg.header.recipient; fills in the sender.
  absl::Status Send(Message msg);

  // Server: blocks until the scheduler says every worker has exited.
  absl::Status WaitTerminate();
  // Node: leave the tier (EXIT, then wait for the scheduler's ack).
  absl::Status Finalize();
  // Scheduler: blocks until every node has exited (OK) or the tier aborted
  // and every node it expected has been told (or the connect timeout, after
  // which a node stops waiting by itself, has passed).
  absl::Status WaitDone();

  // Stops this process's part: no handler runs after it returns. Call it
  // on every tier of a process before destroying any of them, since one
  // tier's handlers may call into the other.
  void Stop();

  // Stops the whole tier: every node's abort handler runs with `reason`.
  void Abort(const std::string& reason);
  // For a node whose Start() was never called because something else of
  // its process failed first: registers just long enough to have the
  // scheduler stop every node of the tier with `reason`, so that none of
  // them waits out its start-up timeout. Best effort; returns at once.
  void AbortUnstarted(const std::string& reason);
  // OK, or the abort that stopped this tier.
  absl::Status health() const;

  int my_id() const { return my_id_; }
  int my_rank() const { return my_rank_; }
  const std::string& name() const { return options_.name; }
  const std::string& label() const { return options_.label; }
  // Messages dropped because of who sent them (unknown id, a role that may
  // not send that command, or an id speaking from another connection).
  uint64_t rejected() const { return rejected_.load(); }
  // The node table (valid after Start(); fixed from then on).
  const std::vector<NodeInfo>& nodes() const { return nodes_; }
  std::vector<NodeInfo> Members(Role role) const;
  const NodeInfo* Find(int id) const;
  const TransportStats& stats() const { return transport_->stats(); }
  // The counters as `NAME_sent_bytes=.. NAME_recv_bytes=.. NAME_sent_msgs=..
  // NAME_recv_msgs=..` (NAME: local or global), for STATS answers.
  std::string StatsText() const;
  Transport& transport() { return *transport_; }

 private:
  Tier(TierOptions options, std::unique_ptr<Transport> transport);

  void ReceiveLoop();
  void HeartbeatLoop();
  void Handle(Message&& msg);

  // Node side (tier.cc): one handler per command a node accepts.
  void HandleAsNode(Message&& msg);
  void OnRegisterAck();
  void OnNodeTable(const Message& msg);
  void OnBarrierDone();
  void OnTerminate();
  void OnShutdown();
  void OnAbort(const Message& msg);
  void OnData(Message&& msg);  // DATA, SET_RULE, STATS, GET_RULE: the data handler's

  // Scheduler side (tier_scheduler.cc), all with mu_ held but the first.
  void HandleAsScheduler(Message&& msg);
  void OnBarrierLocked(const Message& msg);
  void OnExitLocked(const Message& msg);
  void OnAbortReportLocked(const Message& msg);
  void SchedulerTick();
  void AssignIds();
  void ReleaseBarriersLocked();
  void BroadcastLocked(Command cmd, const Buffer& body, uint32_t group_mask);
  void SendControl(int to, Command cmd, Buffer body = Buffer());
  // Sender checks: false (and counted, logged) when `msg` may not be
  // accepted from where it came.
  bool AcceptedAsNodeLocked(const Message& msg);
  bool AcceptedAsSchedulerLocked(const Message& msg);
  bool BindOriginLocked(int id, uint64_t origin);
  // The sender id is bound to the connection `msg` came on (else rejected).
  bool SpeaksOnItsConnectionLocked(const Message& msg);
  void Reject(const Message& msg, const std::string& why);
  void RegisterLocked(Message&& msg);
  std::string CheckRegistrationLocked(const NodeInfo& n) const;
  void DecideTrainersLocked(std::vector<NodeInfo>& workers, bool central) const;
  void FailLocked(const std::string& reason, bool broadcast);
  void NotifyAbortOnce();
  bool IsLive(const NodeInfo& n) const;
  std::string Describe(int id) const;

  TierOptions options_;
  std::unique_ptr<Transport> transport_;
  DataHandler data_handler_;
  std::vector<AbortHandler> abort_handlers_;
  std::vector<std::function<void()>> stop_handlers_;
  std::function<void()> idle_handler_;

  int my_id_ = 0;
  int my_rank_ = -1;
  std::vector<NodeInfo> nodes_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool table_ready_ = false;
  bool registered_ = false;      // REGISTER_ACK received
  bool start_called_ = false;    // Start() or AbortUnstarted() ran: registration is spoken for
  std::map<int, uint64_t> origin_of_;  // node id -> the connection it speaks on
  bool terminated_ = false;      // TERMINATE received (servers)
  bool exit_acked_ = false;      // SHUTDOWN received after our EXIT
  bool done_ = false;            // scheduler: everyone exited
  absl::Status health_;          // first abort
  bool abort_notified_ = false;
  uint64_t barrier_generation_ = 0;
  std::vector<Message> early_data_;  // data that beat the node table here
  size_t early_bytes_ = 0;           // their payload

  // Scheduler state.
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
  absl::Time started_at_;
  absl::Time last_tick_;
  // A scheduler that aborted before its table stays to tell nodes that
  // register late (they would otherwise wait out GEOPS_CONNECT_TIMEOUT).
  absl::Time failed_at_;
  int told_of_abort_ = 0;
  std::atomic<int64_t> last_heard_scheduler_ns_{0};

  std::thread receiver_;
  std::thread heartbeat_;
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> rejected_{0};
};

}  // namespace geops
