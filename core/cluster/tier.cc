#include "core/cluster/tier.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "core/base/log.h"

namespace geops {
namespace {

constexpr absl::Duration kPollSlice = absl::Milliseconds(100);
constexpr size_t kMaxEarlyMessages = 65536;
// Bytes of such messages: a stranger cannot make us hold more before the
// table arrives (after it, unknown senders are rejected outright).
constexpr size_t kMaxEarlyBytes = size_t{512} << 20;

}  // namespace

TierOptions MakeTierOptions(const Config& c, bool global, Role role) {
  TierOptions o;
  o.name = global ? "global" : "local";
  o.label = global ? "global" : absl::StrCat("party ", c.party);
  o.role = role;
  o.cluster = global ? *c.global : *c.local;
  o.host = c.node_host;
  o.port = global ? 0 : c.port;
  // The global tier always runs over TCP; only a local tier
  // honours DMLC_PS_VAN_TYPE / DMLC_ENABLE_RDMA.
  o.transport.van = global ? VanType::kTcp : c.local_van;
  o.transport.rdma_mem_limit = c.rdma_mem_limit;
  o.transport.rdma_slot_bytes = c.rdma_slot_bytes;
  o.transport.connect_timeout = c.startup_timeout;
  o.transport.max_message_bytes = c.max_message_bytes;
  o.transport.curve = global ? c.global_keys : c.local_keys;
  o.transport.rdma_secret = c.rdma_secret;
  o.transport.stage_received = role != Role::kServer;
  o.heartbeat_interval = c.heartbeat_interval;
  o.heartbeat_timeout = global ? c.global_heartbeat_timeout : c.heartbeat_timeout;
  o.startup_timeout = c.startup_timeout;
  o.connect_timeout = c.connect_timeout;
  o.slice_elems = c.bigarray_bound;
  if (o.transport.van == VanType::kTcp && (global ? c.resend_global : c.resend_local)) {
    o.resend_after = c.resend_timeout;
    o.transport.watch_disconnects = true;
  }
  o.self.party_name = c.party;
  o.self.central_flag = c.enable_central_worker_set ? (c.enable_central_worker ? 1 : 0) : -1;
  o.self.num_all_workers = c.num_all_workers;
  o.self.global_server = !global && c.global_role == Role::kServer;
  return o;
}

absl::StatusOr<std::unique_ptr<Tier>> Tier::Create(TierOptions options) {
  auto transport = MakeTransport(options.transport);
  if (!transport.ok()) return transport.status();
  return Create(std::move(options), std::move(*transport));
}

std::unique_ptr<Tier> Tier::Create(TierOptions options, std::unique_ptr<Transport> transport) {
  return std::unique_ptr<Tier>(new Tier(std::move(options), std::move(transport)));
}

Tier::Tier(TierOptions options, std::unique_ptr<Transport> transport)
    : options_(std::move(options)), transport_(std::move(transport)) {}

Tier::~Tier() { Stop(); }

void Tier::Stop() {
  std::vector<std::function<void()>> handlers;
  handlers.swap(stop_handlers_);
  for (auto& h : handlers) h();
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_.store(true);
  }
  cv_.notify_all();
  transport_->Shutdown();
  if (heartbeat_.joinable()) heartbeat_.join();
  if (receiver_.joinable()) receiver_.join();
}

std::string Tier::StatsText() const {
  const TransportStats& s = stats();
  const std::string& n = options_.name;
  return absl::StrFormat("%s_sent_bytes=%d %s_recv_bytes=%d %s_sent_msgs=%d %s_recv_msgs=%d", n,
                         s.bytes_sent.load(), n, s.bytes_received.load(), n,
                         s.messages_sent.load(), n, s.messages_received.load());
}

std::string Tier::Describe(int id) const {
  const NodeInfo* n = Find(id);
  if (n == nullptr) return absl::StrFormat("node %d", id);
  if (n->role == Role::kScheduler) {
    return absl::StrFormat("the %s scheduler at %s", options_.label, n->Address());
  }
  // A global-tier worker is a party's server: name it by its party first.
  if (options_.name == "global" && n->role == Role::kWorker) {
    return absl::StrFormat("the server of party %s (global-tier worker rank %d, node %d at %s)",
                           n->party_name, n->rank, id, n->Address());
  }
  if (options_.name == "global") {
    return absl::StrFormat("global server rank %d (node %d at %s)", n->rank, id, n->Address());
  }
  return absl::StrFormat("%s%s rank %d of %s (node %d at %s)", n->master ? "master " : "",
                         RoleName(n->role), n->rank, options_.label, id, n->Address());
}

const NodeInfo* Tier::Find(int id) const {
  for (const auto& n : nodes_) {
    if (n.id == id) return &n;
  }
  return nullptr;
}

std::vector<NodeInfo> Tier::Members(Role role) const {
  std::vector<NodeInfo> out;
  for (const auto& n : nodes_) {
    if (n.role == role) out.push_back(n);
  }
  return out;
}

absl::Status Tier::health() const {
  std::lock_guard<std::mutex> lock(mu_);
  return health_;
}

absl::Status Tier::Start() {
  const TierConfig& c = options_.cluster;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!health_.ok()) return health_;  // aborted before it began (Abort told the scheduler)
    start_called_ = true;
  }
  if (options_.role == Role::kScheduler) {
    auto port = transport_->Listen(c.scheduler_addr, c.scheduler_port);
    if (!port.ok()) return port.status();
    my_id_ = kSchedulerId;
    my_rank_ = 0;
    started_at_ = absl::Now();
    last_tick_ = started_at_;
    log::Verbose(1, "%s scheduler listening on %s:%d, waiting for %d servers and %d workers",
                 options_.label, c.scheduler_addr, *port, c.num_servers, c.num_workers);
    receiver_ = std::thread([this] { ReceiveLoop(); });
    return absl::OkStatus();
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
  receiver_ = std::thread([this] { ReceiveLoop(); });

  Message reg;
  reg.header.command = Command::kRegister;
  reg.header.recipient = kSchedulerId;
  reg.segments.push_back(EncodeNodeInfo(self));
  if (auto s = transport_->Send(reg); !s.ok()) return s;
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
      options_.name == "global" ? "DMLC_PS_GLOBAL_ROOT_URI/PORT" : "DMLC_PS_ROOT_URI/PORT";
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
        c.scheduler_addr, c.scheduler_port, problem,
        options_.transport.van != VanType::kTcp ? ""
        : options_.name == "global"             ? " (GEOPS_GLOBAL_KEYFILE)"
                                                : " (GEOPS_LOCAL_KEYFILE)"));
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
                              options_.name == "global" ? "GEOPS_GLOBAL_KEYFILE"
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

void Tier::ReceiveLoop() {
  bool busy = false;  // handled messages since the queue was last empty
  while (!stopping_.load()) {
    // With an idle handler, look once more without waiting before calling it.
    auto msg = transport_->Receive(busy && idle_handler_ ? absl::ZeroDuration() : kPollSlice);
    if (options_.role == Role::kScheduler) SchedulerTick();
    NotifyAbortOnce();
    if (!msg.ok()) {
      if (absl::IsCancelled(msg.status())) return;
      if (absl::IsDeadlineExceeded(msg.status())) {
        if (busy && idle_handler_) idle_handler_();
        busy = false;
        continue;
      }
      log::Error("%s: receive failed: %s", options_.label, msg.status().ToString());
      continue;
    }
    // Per message: build the text only when it will be written.
    if (log::Verbosity() >= 2) {
      log::Verbose(2, "%s: recv %s", options_.label, msg->DebugString());
    }
    Handle(std::move(*msg));
    busy = true;
    NotifyAbortOnce();
  }
}

void Tier::Handle(Message&& msg) {
  if (options_.role == Role::kScheduler) {
    HandleAsScheduler(std::move(msg));
  } else {
    HandleAsNode(std::move(msg));
  }
}

void Tier::SendControl(int to, Command cmd, Buffer body) {
  Message m;
  m.header.command = cmd;
  m.header.sender = my_id_;
  m.header.recipient = to;
  if (!body.empty()) m.segments.push_back(std::move(body));
  if (log::Verbosity() >= 2) log::Verbose(2, "%s: send %s", options_.label, m.DebugString());
  if (auto s = transport_->Send(m); !s.ok()) {
    log::Warn("%s: cannot send %s to %s: %s", options_.label, CommandName(cmd), Describe(to),
              s.message());
  }
}

absl::Status Tier::Send(Message msg) {
  msg.header.sender = my_id_;
  if (log::Verbosity() >= 2) log::Verbose(2, "%s: send %s", options_.label, msg.DebugString());
  return transport_->Send(msg);
}

// ---------------------------------------------------------------------------
// Node side.

void Tier::Reject(const Message& msg, const std::string& why) {
  uint64_t n = rejected_.fetch_add(1) + 1;
  // A flood of forgeries must not become a flood of log lines.
  if (n <= 20 || n % 1000 == 0) {
    log::Warn("%s: rejected %s (%d rejected so far): %s", options_.label, msg.DebugString(), n,
              why);
  }
}

bool Tier::BindOriginLocked(int id, uint64_t origin) {
  if (origin == 0) return true;  // a transport that cannot tell connections apart
  auto [it, fresh] = origin_of_.emplace(id, origin);
  return fresh || it->second == origin;
}

bool Tier::SpeaksOnItsConnectionLocked(const Message& msg) {
  if (BindOriginLocked(msg.header.sender, msg.origin)) return true;
  Reject(msg, absl::StrCat("it claims to be ", Describe(msg.header.sender),
                           " but came on another connection"));
  return false;
}

bool Tier::AcceptedAsNodeLocked(const Message& msg) {
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

void Tier::HandleAsNode(Message&& msg) {
  const Header& h = msg.header;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!AcceptedAsNodeLocked(msg)) return;
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

void Tier::OnRegisterAck() {
  std::lock_guard<std::mutex> lock(mu_);
  registered_ = true;
  cv_.notify_all();
}

void Tier::OnNodeTable(const Message& msg) {
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
      FailLocked("the scheduler's node table does not list this node", false);
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
        FailLocked(absl::StrCat("cannot connect to ", n.DebugString(), ": ", s.message()), true);
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
      if (!AcceptedAsNodeLocked(m)) continue;
    }
    if (data_handler_) data_handler_(std::move(m));
  }
}

void Tier::OnBarrierDone() {
  std::lock_guard<std::mutex> lock(mu_);
  ++barrier_generation_;
  cv_.notify_all();
}

void Tier::OnTerminate() {
  std::lock_guard<std::mutex> lock(mu_);
  terminated_ = true;
  cv_.notify_all();
}

void Tier::OnShutdown() {
  std::lock_guard<std::mutex> lock(mu_);
  exit_acked_ = true;
  cv_.notify_all();
}

void Tier::OnAbort(const Message& msg) {
  std::string why = msg.segments.empty() ? "unknown" : DecodeText(msg.segments[0]);
  std::lock_guard<std::mutex> lock(mu_);
  FailLocked(why, false);
}

void Tier::OnData(Message&& msg) {
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

void Tier::HeartbeatLoop() {
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
                                 options_.self.party_name),
                 false);
      break;
    }
    lock.unlock();
    SendControl(kSchedulerId, Command::kHeartbeat);
    lock.lock();
  }
}

absl::Status Tier::Barrier(uint32_t group_mask) {
  std::unique_lock<std::mutex> lock(mu_);
  uint64_t gen = barrier_generation_;
  lock.unlock();
  SendControl(kSchedulerId, Command::kBarrier, EncodeU32(group_mask));
  lock.lock();
  cv_.wait(lock, [&] { return barrier_generation_ != gen || !health_.ok() || stopping_.load(); });
  return health_;
}

absl::Status Tier::WaitTerminate() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return terminated_ || !health_.ok() || stopping_.load(); });
  return health_;
}

absl::Status Tier::Finalize() {
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

void Tier::Abort(const std::string& reason) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!health_.ok()) return;
  if (options_.role != Role::kScheduler && !start_called_) {
    lock.unlock();
    AbortUnstarted(reason);  // a later Start() finds the abort and returns it
    return;
  }
  if (options_.role != Role::kScheduler) {
    Message m;
    m.header.command = Command::kAbort;
    m.header.sender = my_id_;
    m.header.recipient = kSchedulerId;
    m.segments.push_back(EncodeText(reason));
    (void)transport_->Send(m);
  }
  FailLocked(reason, /*broadcast=*/true);
}

void Tier::AbortUnstarted(const std::string& reason) {
  if (options_.role == Role::kScheduler) return;
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

void Tier::FailLocked(const std::string& reason, bool broadcast) {
  if (!health_.ok()) return;
  health_ = absl::AbortedError(reason);
  failed_at_ = absl::Now();
  log::Error("%s tier stopped: %s", options_.label, reason);
  if (broadcast && options_.role == Role::kScheduler) {
    BroadcastLocked(Command::kAbort, EncodeText(reason), group::kServers | group::kWorkers);
    // Nodes still waiting for a node table are not in it yet: tell them on
    // their temporary ids, or they would wait out their start-up timeout.
    for (const auto& p : pending_) SendControl(p.temp_id, Command::kAbort, EncodeText(reason));
    told_of_abort_ += static_cast<int>(pending_.size());
  }
  cv_.notify_all();
}

void Tier::NotifyAbortOnce() {
  std::string reason;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (health_.ok() || abort_notified_) return;
    abort_notified_ = true;
    reason = std::string(health_.message());
  }
  // Runs on the receive thread with no lock held, so the handler may call
  // into other tiers (whose handlers may call back into this one).
  for (const auto& h : abort_handlers_) h(reason);
}

// ---------------------------------------------------------------------------
// Scheduler side.

bool Tier::IsLive(const NodeInfo& n) const {
  auto it = exited_.find(n.id);
  return n.role != Role::kScheduler && (it == exited_.end() || !it->second);
}

void Tier::BroadcastLocked(Command cmd, const Buffer& body, uint32_t group_mask) {
  for (const auto& n : nodes_) {
    if ((group::Of(n.role) & group_mask) == 0 || !IsLive(n)) continue;
    SendControl(n.id, cmd, body);
  }
}

}  // namespace geops
