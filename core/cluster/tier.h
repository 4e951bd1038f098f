// Tier: what the two kinds of member of one tier (a party's local tier, or
// the global tier) have in common. Each member owns that tier's transport
// and runs a receive thread; both ends keep the node table, the abort
// protocol (first failure wins, abort handlers run once) and the counters.
//
// A server or worker is a TierNode (tier_node.h); the tier's scheduler is a
// TierScheduler (tier_scheduler.h). They differ in what they accept and
// answer: each accepts only its own side's commands, and each command has
// one handler (On*). A process in both tiers (a party's server, a global
// server) simply holds two TierNodes.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "core/base/config.h"
#include "core/wire/control.h"
#include "core/wire/message.h"
#include "core/transport/transport.h"

namespace geops {

// Which of a process's two tiers: its party's own, or the one across
// parties. The global tier has its own variables, timeouts and policies.
enum class TierKind { kLocal, kGlobal };

// "local" or "global": how stats lines and counters name a tier.
inline std::string_view TierName(TierKind kind) {
  return kind == TierKind::kGlobal ? "global" : "local";
}

struct TierOptions {
  TierKind kind = TierKind::kLocal;
  // How logs name this tier: "party A" for a local tier, "global" for the
  // global one, so a message that travels between parties stays readable.
  std::string label = "local";
  Role role = Role::kWorker;       // a TierNode's: kServer or kWorker
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
  using AbortHandler = std::function<void(const std::string& reason)>;

  // Both sides join their threads in their own destructors (Stop()): the
  // receive thread calls into them.
  virtual ~Tier();
  Tier(const Tier&) = delete;
  Tier& operator=(const Tier&) = delete;

  // Called on the receive thread (within a poll slice) once after the
  // first abort. Set before Start().
  void add_abort_handler(AbortHandler h) { abort_handlers_.push_back(std::move(h)); }

  // Stops this process's part: no handler runs after it returns. Call it
  // on every tier of a process before destroying any of them, since one
  // tier's handlers may call into the other.
  virtual void Stop();

  // OK, or the abort that stopped this tier.
  absl::Status health() const;

  int my_id() const { return my_id_; }
  int my_rank() const { return my_rank_; }
  TierKind kind() const { return options_.kind; }
  bool global() const { return options_.kind == TierKind::kGlobal; }
  std::string_view name() const { return TierName(options_.kind); }
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

 protected:
  Tier(TierOptions options, std::unique_ptr<Transport> transport);

  // Starts the receive thread. `on_idle` runs on it when it has handled
  // messages and finds no more waiting (a server sends what it batched).
  void StartReceiving(std::function<void()> on_idle);
  // Every message that arrives, on the receive thread, no lock held.
  virtual void Handle(Message&& msg) = 0;
  // On the receive thread after every wait for a message, no lock held.
  virtual void Tick() {}

  void SendControl(int to, Command cmd, Buffer body = Buffer());
  // Counted, and logged unless a flood of them is under way.
  void Reject(const Message& msg, const std::string& why);
  bool BindOriginLocked(int id, uint64_t origin);
  // The sender id is bound to the connection `msg` came on (else rejected).
  bool SpeaksOnItsConnectionLocked(const Message& msg);
  // Records the first failure and wakes every waiter; false when the tier
  // had already failed (the caller then has nobody new to tell).
  bool FailLocked(const std::string& reason);
  std::string Describe(int id) const;

  TierOptions options_;
  std::unique_ptr<Transport> transport_;

  // Written before the node table is published (table_ready_ under mu_),
  // then fixed.
  int my_id_ = 0;
  int my_rank_ = -1;
  std::vector<NodeInfo> nodes_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  // Guarded by mu_.
  bool table_ready_ = false;
  std::map<int, uint64_t> origin_of_;  // node id -> the connection it speaks on
  absl::Status health_;                // first abort
  std::atomic<bool> stopping_{false};

 private:
  void ReceiveLoop(const std::function<void()>& on_idle);
  void NotifyAbortOnce();

  std::vector<AbortHandler> abort_handlers_;
  bool abort_notified_ = false;  // guarded by mu_
  std::thread receiver_;
  std::atomic<uint64_t> rejected_{0};
};

}  // namespace geops
