#include "core/cluster/tier_node.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "core/base/log.h"

namespace geops {
namespace {

constexpr size_t kMaxEarlyMessages = 65536;
// Bytes of such messages: a stranger cannot make us hold more before the
// table arrives (after it, unknown senders are rejected outright).
constexpr size_t kMaxEarlyBytes = size_t{512} << 20;

}  // namespace

std::unique_ptr<TierNode> TierNode::Create(TierOptions options,
                                           std::unique_ptr<Transport> transport) {
  return std::unique_ptr<TierNode>(new TierNode(std::move(options), std::move(transport)));
}

TierNode::TierNode(TierOptions options, std::unique_ptr<Transport> transport)
    : Tier(std::move(options), std::move(transport)) {}

TierNode::~TierNode() { Stop(); }

std::string TierNode::KeyHint() const {
  if (options_.transport.van != VanType::kTcp) return "";
  return global() ? " (GEOPS_GLOBAL_KEYFILE)" : " (GEOPS_LOCAL_KEYFILE)";
}

void TierNode::Stop() {
  std::vector<std::function<void()>> handlers;
  handlers.swap(stop_handlers_);
  for (auto& h : handlers) h();
  Tier::Stop();
  if (heartbeat_.joinable()) heartbeat_.join();
}

absl::Status TierNode::Start() {
  const TierConfig& c = options_.cluster;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!health_.ok()) return health_;  // aborted before it began (Abort told the scheduler)
    start_called_ = true;
  }
  auto port = transport_->Listen(options_.host, options_.port);
  if (!port.ok()) return port.status();
  NodeInfo self = options_.self;
  self.role = options_.role;
  self.host = options_.host;
  self.port = *port;
  options_.self = self;
  if (auto s = transport_->Connect(kSchedulerId, c.scheduler_addr, c.scheduler_port); !s.ok()) {
    return s;
  }
  last_heard_scheduler_ns_.store(absl::GetCurrentTimeNanos());
  StartReceiving(idle_handler_);

  Message reg;
  reg.header.command = Command::kRegister;
  reg.header.recipient = kSchedulerId;
  reg.segments.push_back(EncodeNodeInfo(self));
  if (auto s = transport_->Send(reg); !s.ok()) {
    return absl::UnavailableError(absl::StrFormat("%s tier: cannot register with the scheduler at %s:%d: %s%s",
                                                  options_.label, c.scheduler_addr,
                                                  c.scheduler_port, s.message(), KeyHint()));
  }
  {
    // An abort that raced with the registration could not reach the
    // scheduler yet: say it now, on the registration's connection.
    std::lock_guard<std::mutex> lock(mu_);
    if (!health_.ok() && my_id_ == 0) {
      Message abort;
      abort.header.command = Command::kAbort;
      abort.header.recipient = kSchedulerId;
      abort.segments.push_back(EncodeText(std::string(health_.message())));
      (void)transport_->Send(abort);
    }
  }
  log::Verbose(1, "%s: registering as %s at %s:%d with the scheduler at %s:%d", options_.label,
               RoleName(options_.role), self.host, self.port, c.scheduler_addr,
               c.scheduler_port);

  const char* where =
      global() ? "DMLC_PS_GLOBAL_ROOT_URI/PORT" : "DMLC_PS_ROOT_URI/PORT";
  std::unique_lock<std::mutex> lock(mu_);
  // A scheduler that never came up (port taken, wrong address, crashed)
  // must not cost everyone the whole start-up timeout: it acknowledges a
  // registration at once, so silence for connect_timeout means it is gone.
  // Poll the transport too: a refused security handshake is known at once.
  std::string problem;
  absl::Time give_up = absl::Now() + options_.connect_timeout;
  bool acked = false;
  while (!(acked = registered_ || table_ready_) && health_.ok() && absl::Now() < give_up) {
    cv_.wait_for(lock, std::chrono::milliseconds(50));
    problem = transport_->PeerProblem(kSchedulerId);
    if (!problem.empty()) break;
  }
  if (!health_.ok()) return health_;
  if (!acked && !problem.empty()) {
    health_ = absl::PermissionDeniedError(absl::StrFormat(
        "%s tier: cannot register with the scheduler at %s:%d: %s%s", options_.label,
        c.scheduler_addr, c.scheduler_port, problem, KeyHint()));
    return health_;
  }
  if (!acked) {
    std::string why = absl::StrFormat(
        "%s tier: no scheduler answered at %s:%d within %s (GEOPS_CONNECT_TIMEOUT): it is not "
        "running, failed to start, or %s is wrong%s",
        options_.label, c.scheduler_addr, c.scheduler_port,
        absl::FormatDuration(options_.connect_timeout), where,
        options_.transport.curve
            ? ""
            : absl::StrFormat("; or the tier runs CURVE and this process has no %s",
                              global() ? "GEOPS_GLOBAL_KEYFILE"
                                                        : "GEOPS_LOCAL_KEYFILE"));
    health_ = absl::UnavailableError(why);
    return health_;
  }
  // Waiting for the table, check every connect_timeout that the scheduler
  // still holds our registration (it answers a repeat with another ack): a
  // scheduler that died, or whose abort was lost, then costs that long, not
  // the whole start-up timeout.
  const absl::Time table_deadline = absl::Now() + options_.startup_timeout;
  for (;;) {
    absl::Time check_at = std::min(table_deadline, absl::Now() + options_.connect_timeout);
    cv_.wait_for(lock, absl::ToChronoMilliseconds(check_at - absl::Now()),
                 [&] { return table_ready_ || !health_.ok(); });
    if (!health_.ok()) return health_;
    if (table_ready_) break;
    if (absl::Now() >= table_deadline) {
      return absl::DeadlineExceededError(absl::StrFormat(
          "%s tier: no node table from the scheduler at %s:%d after %s (it waits for %d servers "
          "and %d workers: are the counts right?)",
          options_.label, c.scheduler_addr, c.scheduler_port,
          absl::FormatDuration(options_.startup_timeout), c.num_servers, c.num_workers));
    }
    registered_ = false;
    lock.unlock();
    (void)transport_->Send(reg);
    lock.lock();
    bool still = cv_.wait_for(lock, absl::ToChronoMilliseconds(options_.connect_timeout), [&] {
      return registered_ || table_ready_ || !health_.ok();
    });
    if (!health_.ok()) return health_;
    if (!still) {
      health_ = absl::UnavailableError(absl::StrFormat(
          "%s tier: the scheduler at %s:%d stopped answering while we waited for the node table "
          "(it died, or the network to it is down)",
          options_.label, c.scheduler_addr, c.scheduler_port));
      return health_;
    }
  }
  lock.unlock();
  heartbeat_ = std::thread([this] { HeartbeatLoop(); });
  return absl::OkStatus();
}

absl::Status TierNode::Send(Message msg) {
  msg.header.sender = my_id_;
  if (log::Verbosity() >= 2) log::Verbose(2, "%s: send %s", options_.label, msg.DebugString());
  return transport_->Send(msg);
}

bool TierNode::AcceptedLocked(const Message& msg) {
  const Header& h = msg.header;
  switch (h.command) {
    case Command::kRegisterAck:
    case Command::kNodeTable:
    case Command::kBarrierDone:
    case Command::kHeartbeatAck:
    case Command::kTerminate:
    case Command::kShutdown:
    case Command::kAbort:
      if (h.sender != kSchedulerId) {
        Reject(msg, "only the scheduler may send this command");
        return false;
      }
      if (!BindOriginLocked(kSchedulerId, msg.origin)) {
        Reject(msg, "it claims to be the scheduler but came on another connection");
        return false;
      }
      return true;
    case Command::kData:
    case Command::kSetRule:
    case Command::kStats:
    case Command::kGetRule: {
      if (!table_ready_) return true;  // checked again when replayed
      const NodeInfo* n = Find(h.sender);
      const bool request = h.flags & msgflag::kRequest;
      const bool server = options_.role == Role::kServer;
      // Servers take requests from workers; workers take answers from servers.
      if (n == nullptr || n->role != (server ? Role::kWorker : Role::kServer) ||
          request != server) {
        Reject(msg, n == nullptr ? "the sender is not in the node table"
                                 : absl::StrCat("a ", RoleName(n->role), " may not send a ",
                                                request ? "request" : "response", " to a ",
                                                RoleName(options_.role)));
        return false;
      }
      if (h.command == Command::kSetRule && request && !n->master) {
        bool tier_has_master = false;
        for (const auto& m : nodes_) tier_has_master |= m.master;
        if (tier_has_master) {
          Reject(msg, "only the master worker sets the update rule");
          return false;
        }
      }
      return SpeaksOnItsConnectionLocked(msg);
    }
    default:
      Reject(msg, "not a command a node accepts");
      return false;
  }
}

void TierNode::Handle(Message&& msg) {
  const Header& h = msg.header;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!AcceptedLocked(msg)) return;
  }
  if (h.sender == kSchedulerId) {
    last_heard_scheduler_ns_.store(absl::GetCurrentTimeNanos(), std::memory_order_relaxed);
  }
  switch (h.command) {
    case Command::kRegisterAck: return OnRegisterAck();
    case Command::kNodeTable: return OnNodeTable(msg);
    case Command::kBarrierDone: return OnBarrierDone();
    case Command::kHeartbeatAck: return;  // hearing from the scheduler is all it says
    case Command::kTerminate: return OnTerminate();
    case Command::kShutdown: return OnShutdown();
    case Command::kAbort: return OnAbort(msg);
    case Command::kData:
    case Command::kSetRule:
    case Command::kStats:
    case Command::kGetRule: return OnData(std::move(msg));
    default:
      log::Warn("%s: dropped unexpected %s", options_.label, msg.DebugString());
  }
}

void TierNode::OnRegisterAck() {
  std::lock_guard<std::mutex> lock(mu_);
  registered_ = true;
  cv_.notify_all();
}

void TierNode::OnNodeTable(const Message& msg) {
  if (msg.segments.size() != 1) return;
  auto table = DecodeNodeTable(msg.segments[0]);
  if (!table.ok()) {
    log::Error("%s: dropped a node table: %s", options_.label, table.status().message());
    return;
  }
  std::vector<Message> early;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (table_ready_) return;
    nodes_ = std::move(*table);
    for (const auto& n : nodes_) {
      if (n.host == options_.self.host && n.port == options_.self.port &&
          n.role == options_.role) {
        my_id_ = n.id;
        my_rank_ = n.rank;
      }
    }
    if (my_id_ == 0) {
      FailLocked("the scheduler's node table does not list this node");
      return;
    }
    for (const auto& n : nodes_) {
      log::Verbose(1, "%s: node table: %s%s", options_.label, n.DebugString(),
                   n.id == my_id_ ? " (me)" : "");
      // Workers talk to servers and servers answer workers; nobody else
      // needs a path except to the scheduler, which is already open.
      bool wanted = (options_.role == Role::kWorker && n.role == Role::kServer) ||
                    (options_.role == Role::kServer && n.role == Role::kWorker);
      if (!wanted) continue;
      if (auto s = transport_->Connect(n.id, n.host, n.port); !s.ok()) {
        FailLocked(absl::StrCat("cannot connect to ", n.DebugString(), ": ", s.message()));
      }
    }
    table_ready_ = true;
    early.swap(early_data_);
    early_bytes_ = 0;
  }
  cv_.notify_all();
  for (auto& m : early) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!AcceptedLocked(m)) continue;
    }
    if (data_handler_) data_handler_(std::move(m));
  }
}

void TierNode::OnBarrierDone() {
  std::lock_guard<std::mutex> lock(mu_);
  ++barrier_generation_;
  cv_.notify_all();
}

void TierNode::OnTerminate() {
  std::lock_guard<std::mutex> lock(mu_);
  terminated_ = true;
  cv_.notify_all();
}

void TierNode::OnShutdown() {
  std::lock_guard<std::mutex> lock(mu_);
  exit_acked_ = true;
  cv_.notify_all();
}

void TierNode::OnAbort(const Message& msg) {
  std::string why = msg.segments.empty() ? "unknown" : DecodeText(msg.segments[0]);
  std::lock_guard<std::mutex> lock(mu_);
  FailLocked(why);
}

void TierNode::OnData(Message&& msg) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!table_ready_) {
      // Peers that got the table first may already talk to us; keep a
      // bounded number of their messages for when ours arrives.
      if (early_data_.size() >= kMaxEarlyMessages ||
          early_bytes_ + msg.payload_bytes() > kMaxEarlyBytes) {
        Reject(msg, absl::StrFormat("it arrived before the node table and %d messages (%d "
                                    "bytes) are already waiting",
                                    early_data_.size(), early_bytes_));
        return;
      }
      early_bytes_ += msg.payload_bytes();
      early_data_.push_back(std::move(msg));
      return;
    }
  }
  if (data_handler_) data_handler_(std::move(msg));
}

void TierNode::HeartbeatLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  absl::Time last_tick = absl::Now();
  while (!stopping_.load() && !exit_acked_ && health_.ok()) {
    cv_.wait_for(lock, absl::ToChronoMilliseconds(options_.heartbeat_interval));
    if (stopping_.load() || exit_acked_ || !health_.ok()) break;
    absl::Time now = absl::Now();
    if (now - last_tick > options_.heartbeat_timeout) {
      // We did not run for longer than the timeout (SIGSTOP, a debugger,
      // swapping): the silence was ours, not the scheduler's. Speak first;
      // if the scheduler gave up on us meanwhile, its abort says so.
      log::Warn("%s: this process was paused for %s; not blaming the scheduler", options_.label,
                absl::FormatDuration(now - last_tick));
      last_heard_scheduler_ns_.store(absl::ToUnixNanos(now), std::memory_order_relaxed);
    }
    last_tick = now;
    absl::Duration silent =
        absl::Now() - absl::FromUnixNanos(last_heard_scheduler_ns_.load(std::memory_order_relaxed));
    if (silent > options_.heartbeat_timeout) {
      // Name both ends: on a WAN the cause is as often the link as the peer.
      FailLocked(absl::StrFormat("the %s scheduler at %s:%d has been silent for %s: it died, or "
                                 "the link from party %s to it is down",
                                 options_.label, options_.cluster.scheduler_addr,
                                 options_.cluster.scheduler_port, absl::FormatDuration(silent),
                                 options_.self.party_name));
      break;
    }
    lock.unlock();
    SendControl(kSchedulerId, Command::kHeartbeat);
    lock.lock();
  }
}

absl::Status TierNode::Barrier(uint32_t group_mask) {
  std::unique_lock<std::mutex> lock(mu_);
  uint64_t gen = barrier_generation_;
  lock.unlock();
  SendControl(kSchedulerId, Command::kBarrier, EncodeU32(group_mask));
  lock.lock();
  cv_.wait(lock, [&] { return barrier_generation_ != gen || !health_.ok() || stopping_.load(); });
  return health_;
}

absl::Status TierNode::WaitTerminate() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return terminated_ || !health_.ok() || stopping_.load(); });
  return health_;
}

absl::Status TierNode::Finalize() {
  SendControl(kSchedulerId, Command::kExit);
  std::unique_lock<std::mutex> lock(mu_);
  bool acked = cv_.wait_for(lock, absl::ToChronoMilliseconds(options_.heartbeat_timeout), [&] {
    return exit_acked_ || !health_.ok();
  });
  if (!health_.ok()) return health_;
  if (!acked) {
    return absl::DeadlineExceededError(absl::StrFormat(
        "%s tier: the scheduler did not acknowledge our exit within %s", options_.label,
        absl::FormatDuration(options_.heartbeat_timeout)));
  }
  return absl::OkStatus();
}

void TierNode::Abort(const std::string& reason) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!health_.ok()) return;
  if (!start_called_) {
    lock.unlock();
    AbortUnstarted(reason);  // a later Start() finds the abort and returns it
    return;
  }
  Message m;
  m.header.command = Command::kAbort;
  m.header.sender = my_id_;
  m.header.recipient = kSchedulerId;
  m.segments.push_back(EncodeText(reason));
  (void)transport_->Send(m);
  FailLocked(reason);
}

void TierNode::AbortUnstarted(const std::string& reason) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (start_called_) return;  // registered already: Abort() is the way
    start_called_ = true;
    if (health_.ok()) {
      health_ = absl::AbortedError(reason);
      log::Error("%s tier stopped before it started: %s", options_.label, reason);
    }
  }
  const TierConfig& c = options_.cluster;
  auto port = transport_->Listen(options_.host, options_.port);
  if (!port.ok() || !transport_->Connect(kSchedulerId, c.scheduler_addr, c.scheduler_port).ok()) {
    return;
  }
  // The scheduler accepts an abort from a node it has a registration of,
  // on the connection the registration came on.
  NodeInfo self = options_.self;
  self.role = options_.role;
  self.host = options_.host;
  self.port = *port;
  Message reg;
  reg.header.command = Command::kRegister;
  reg.header.recipient = kSchedulerId;
  reg.segments.push_back(EncodeNodeInfo(self));
  Message abort;
  abort.header.command = Command::kAbort;
  abort.header.recipient = kSchedulerId;
  abort.segments.push_back(EncodeText(reason));
  if (transport_->Send(reg).ok()) (void)transport_->Send(abort);
}

}  // namespace geops
