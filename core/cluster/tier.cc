#include "core/cluster/tier.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "core/base/log.h"

namespace geops {
namespace {

uint32_t GroupOf(TierRole r) {
  switch (r) {
    case TierRole::kScheduler: return group::kScheduler;
    case TierRole::kServer: return group::kServers;
    case TierRole::kWorker: return group::kWorkers;
  }
  return 0;
}

constexpr absl::Duration kPollSlice = absl::Milliseconds(100);
constexpr size_t kMaxEarlyMessages = 65536;

}  // namespace

TierOptions MakeTierOptions(const Config& c, bool global, TierRole role) {
  TierOptions o;
  o.name = global ? "global" : "local";
  o.role = role;
  o.cluster = global ? *c.global : *c.local;
  o.host = c.node_host;
  o.port = global ? 0 : c.port;
  // The global tier always runs over TCP (DESIGN.md); only a local tier
  // honours DMLC_PS_VAN_TYPE / DMLC_ENABLE_RDMA.
  o.transport.van = global ? VanType::kTcp : c.local_van;
  o.transport.rdma_mem_limit = c.rdma_mem_limit;
  o.transport.rdma_slot_bytes = c.rdma_slot_bytes;
  o.transport.connect_timeout = c.startup_timeout;
  o.heartbeat_interval = c.heartbeat_interval;
  o.heartbeat_timeout = c.heartbeat_timeout;
  o.startup_timeout = c.startup_timeout;
  return o;
}

absl::StatusOr<std::unique_ptr<Tier>> Tier::Create(TierOptions options) {
  auto transport = MakeTransport(options.transport);
  if (!transport.ok()) return transport.status();
  return std::unique_ptr<Tier>(new Tier(std::move(options), std::move(*transport)));
}

Tier::Tier(TierOptions options, std::unique_ptr<Transport> transport)
    : options_(std::move(options)), transport_(std::move(transport)) {}

Tier::~Tier() { Stop(); }

void Tier::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_.store(true);
  }
  cv_.notify_all();
  transport_->Shutdown();
  if (heartbeat_.joinable()) heartbeat_.join();
  if (receiver_.joinable()) receiver_.join();
}

std::string Tier::Describe(int id) const {
  if (const NodeInfo* n = Find(id)) {
    return absl::StrFormat("node %d (%s rank %d at %s)", id, TierRoleName(n->role), n->rank,
                           n->Address());
  }
  return absl::StrFormat("node %d", id);
}

const NodeInfo* Tier::Find(int id) const {
  for (const auto& n : nodes_) {
    if (n.id == id) return &n;
  }
  return nullptr;
}

std::vector<NodeInfo> Tier::Members(TierRole role) const {
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
  if (options_.role == TierRole::kScheduler) {
    auto port = transport_->Listen(c.scheduler_host, c.scheduler_port);
    if (!port.ok()) return port.status();
    my_id_ = kSchedulerId;
    my_rank_ = 0;
    started_at_ = absl::Now();
    log::Verbose(1, "%s scheduler listening on %s:%d, waiting for %d servers and %d workers",
                 options_.name, c.scheduler_host, *port, c.num_servers, c.num_workers);
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
  if (auto s = transport_->Connect(kSchedulerId, c.scheduler_host, c.scheduler_port); !s.ok()) {
    return s;
  }
  last_heard_scheduler_ns_.store(absl::GetCurrentTimeNanos());
  receiver_ = std::thread([this] { ReceiveLoop(); });

  Message reg;
  reg.header.command = Command::kRegister;
  reg.header.recipient = kSchedulerId;
  reg.segments.push_back(EncodeNodeInfo(self));
  if (auto s = transport_->Send(reg); !s.ok()) return s;
  log::Verbose(1, "%s: registering as %s at %s:%d with the scheduler at %s:%d", options_.name,
               TierRoleName(options_.role), self.host, self.port, c.scheduler_host,
               c.scheduler_port);

  std::unique_lock<std::mutex> lock(mu_);
  bool ready = cv_.wait_for(lock, absl::ToChronoMilliseconds(options_.startup_timeout), [&] {
    return table_ready_ || !health_.ok();
  });
  if (!health_.ok()) return health_;
  if (!ready) {
    return absl::DeadlineExceededError(absl::StrFormat(
        "%s tier: no node table from the scheduler at %s:%d after %s (is it running, and are "
        "%s right? it waits for %d servers and %d workers)",
        options_.name, c.scheduler_host, c.scheduler_port,
        absl::FormatDuration(options_.startup_timeout),
        options_.name == "global" ? "DMLC_PS_GLOBAL_ROOT_URI/PORT" : "DMLC_PS_ROOT_URI/PORT",
        c.num_servers, c.num_workers));
  }
  lock.unlock();
  heartbeat_ = std::thread([this] { HeartbeatLoop(); });
  return absl::OkStatus();
}

void Tier::ReceiveLoop() {
  while (!stopping_.load()) {
    auto msg = transport_->Receive(kPollSlice);
    if (options_.role == TierRole::kScheduler) SchedulerTick();
    NotifyAbortOnce();
    if (!msg.ok()) {
      if (absl::IsCancelled(msg.status())) return;
      if (absl::IsDeadlineExceeded(msg.status())) continue;
      log::Error("%s: receive failed: %s", options_.name, msg.status().ToString());
      continue;
    }
    log::Verbose(2, "%s: recv %s", options_.name, msg->DebugString());
    Handle(std::move(*msg));
    NotifyAbortOnce();
  }
}

void Tier::Handle(Message&& msg) {
  if (options_.role == TierRole::kScheduler) {
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
  log::Verbose(2, "%s: send %s", options_.name, m.DebugString());
  if (auto s = transport_->Send(m); !s.ok()) {
    log::Warn("%s: cannot send %s to %s: %s", options_.name, CommandName(cmd), Describe(to),
              s.message());
  }
}

absl::Status Tier::Send(Message msg) {
  msg.header.sender = my_id_;
  log::Verbose(2, "%s: send %s", options_.name, msg.DebugString());
  return transport_->Send(msg);
}

// ---------------------------------------------------------------------------
// Node side.

void Tier::HandleAsNode(Message&& msg) {
  const Header& h = msg.header;
  if (h.sender == kSchedulerId) {
    last_heard_scheduler_ns_.store(absl::GetCurrentTimeNanos(), std::memory_order_relaxed);
  }
  switch (h.command) {
    case Command::kNodeTable: {
      if (msg.segments.size() != 1) break;
      auto table = DecodeNodeTable(msg.segments[0]);
      if (!table.ok()) {
        log::Error("%s: dropped a node table: %s", options_.name, table.status().message());
        break;
      }
      std::vector<Message> early;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (table_ready_) break;
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
          break;
        }
        for (const auto& n : nodes_) {
          log::Verbose(1, "%s: node table: %s%s", options_.name, n.DebugString(),
                       n.id == my_id_ ? " (me)" : "");
          // Workers talk to servers and servers answer workers; nobody else
          // needs a path except to the scheduler, which is already open.
          bool wanted = (options_.role == TierRole::kWorker && n.role == TierRole::kServer) ||
                        (options_.role == TierRole::kServer && n.role == TierRole::kWorker);
          if (!wanted) continue;
          if (auto s = transport_->Connect(n.id, n.host, n.port); !s.ok()) {
            FailLocked(absl::StrCat("cannot connect to ", n.DebugString(), ": ", s.message()),
                       true);
          }
        }
        table_ready_ = true;
        early.swap(early_data_);
      }
      cv_.notify_all();
      for (auto& m : early) {
        if (data_handler_) data_handler_(std::move(m));
      }
      break;
    }
    case Command::kBarrierDone: {
      std::lock_guard<std::mutex> lock(mu_);
      ++barrier_generation_;
      cv_.notify_all();
      break;
    }
    case Command::kHeartbeatAck:
      break;
    case Command::kTerminate: {
      std::lock_guard<std::mutex> lock(mu_);
      terminated_ = true;
      cv_.notify_all();
      break;
    }
    case Command::kShutdown: {
      std::lock_guard<std::mutex> lock(mu_);
      exit_acked_ = true;
      cv_.notify_all();
      break;
    }
    case Command::kAbort: {
      std::string why = msg.segments.empty() ? "unknown" : DecodeText(msg.segments[0]);
      std::lock_guard<std::mutex> lock(mu_);
      FailLocked(why, false);
      break;
    }
    case Command::kData:
    case Command::kSetRule: {
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (!table_ready_) {
          // Peers that got the table first may already talk to us; keep a
          // bounded number of their messages for when ours arrives.
          if (early_data_.size() >= kMaxEarlyMessages) {
            log::Warn("%s: dropped %s: it arrived before the node table and %d others are "
                      "already waiting",
                      options_.name, msg.DebugString(), early_data_.size());
            break;
          }
          early_data_.push_back(std::move(msg));
          break;
        }
      }
      if (data_handler_) data_handler_(std::move(msg));
      break;
    }
    default:
      log::Warn("%s: dropped unexpected %s", options_.name, msg.DebugString());
  }
}

void Tier::HeartbeatLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_.load() && !exit_acked_ && health_.ok()) {
    cv_.wait_for(lock, absl::ToChronoMilliseconds(options_.heartbeat_interval));
    if (stopping_.load() || exit_acked_ || !health_.ok()) break;
    absl::Duration silent =
        absl::Now() - absl::FromUnixNanos(last_heard_scheduler_ns_.load(std::memory_order_relaxed));
    if (silent > options_.heartbeat_timeout) {
      FailLocked(absl::StrFormat("the %s scheduler at %s:%d has been silent for %s: it died or "
                                 "is unreachable",
                                 options_.name, options_.cluster.scheduler_host,
                                 options_.cluster.scheduler_port, absl::FormatDuration(silent)),
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
        "%s tier: the scheduler did not acknowledge our exit within %s", options_.name,
        absl::FormatDuration(options_.heartbeat_timeout)));
  }
  return absl::OkStatus();
}

void Tier::Abort(const std::string& reason) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!health_.ok()) return;
  if (options_.role != TierRole::kScheduler) {
    Message m;
    m.header.command = Command::kAbort;
    m.header.sender = my_id_;
    m.header.recipient = kSchedulerId;
    m.segments.push_back(EncodeText(reason));
    (void)transport_->Send(m);
  }
  FailLocked(reason, /*broadcast=*/true);
}

void Tier::FailLocked(const std::string& reason, bool broadcast) {
  if (!health_.ok()) return;
  health_ = absl::AbortedError(reason);
  log::Error("%s tier stopped: %s", options_.name, reason);
  if (broadcast && options_.role == TierRole::kScheduler) {
    BroadcastLocked(Command::kAbort, EncodeText(reason), group::kServers | group::kWorkers);
    // Nodes still waiting for a node table are not in it yet: tell them
    // through temporary ids, or they would wait out their start-up timeout.
    for (size_t i = 0; i < pending_.size(); ++i) {
      int temp_id = -1 - static_cast<int>(i);
      if (transport_->Connect(temp_id, pending_[i].host, pending_[i].port).ok()) {
        SendControl(temp_id, Command::kAbort, EncodeText(reason));
      }
    }
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
  return n.role != TierRole::kScheduler && (it == exited_.end() || !it->second);
}

void Tier::BroadcastLocked(Command cmd, const Buffer& body, uint32_t group_mask) {
  for (const auto& n : nodes_) {
    if ((GroupOf(n.role) & group_mask) == 0 || !IsLive(n)) continue;
    SendControl(n.id, cmd, body);
  }
}

void Tier::HandleAsScheduler(Message&& msg) {
  const Header& h = msg.header;
  std::lock_guard<std::mutex> lock(mu_);
  if (h.sender != 0) last_seen_[h.sender] = absl::Now();
  switch (h.command) {
    case Command::kRegister: {
      if (msg.segments.size() != 1) break;
      auto info = DecodeNodeInfo(msg.segments[0]);
      if (!info.ok()) {
        log::Warn("%s scheduler: dropped a registration: %s", options_.name,
                  info.status().message());
        break;
      }
      if (info->role == TierRole::kScheduler) break;
      int want = info->role == TierRole::kServer ? options_.cluster.num_servers
                                                 : options_.cluster.num_workers;
      int have = 0;
      for (const auto& p : pending_) have += p.role == info->role;
      if (table_ready_ || have >= want) {
        // Tell the surplus node why instead of letting it wait forever.
        std::string why = absl::StrFormat(
            "the %s tier already has its %d %ss (DMLC_NUM_%s%s=%d); %s:%d is one too many",
            options_.name, want, TierRoleName(info->role), options_.name == "global" ? "GLOBAL_" : "",
            info->role == TierRole::kServer ? "SERVER" : "WORKER", want, info->host, info->port);
        log::Error("%s scheduler: %s", options_.name, why);
        int temp_id = -1 - static_cast<int>(pending_.size());
        if (transport_->Connect(temp_id, info->host, info->port).ok()) {
          SendControl(temp_id, Command::kAbort, EncodeText(why));
        }
        break;
      }
      log::Verbose(1, "%s scheduler: %s registered from %s (%d/%d)", options_.name,
                   TierRoleName(info->role), info->Address(), have + 1, want);
      pending_.push_back(*info);
      if (static_cast<int>(pending_.size()) ==
          options_.cluster.num_servers + options_.cluster.num_workers) {
        AssignIds();
      }
      break;
    }
    case Command::kBarrier: {
      if (msg.segments.size() != 1) break;
      auto mask = DecodeU32(msg.segments[0]);
      if (!mask.ok() || *mask == 0 || (*mask & ~group::kAll)) break;
      barrier_waiting_[*mask].push_back(h.sender);
      ReleaseBarriersLocked();
      break;
    }
    case Command::kHeartbeat:
      SendControl(h.sender, Command::kHeartbeatAck);
      break;
    case Command::kExit: {
      const NodeInfo* n = Find(h.sender);
      if (!n) break;
      exited_[h.sender] = true;
      log::Verbose(1, "%s scheduler: %s exited", options_.name, Describe(h.sender));
      SendControl(h.sender, Command::kShutdown);
      bool workers_left = false, anyone_left = false;
      for (const auto& m : nodes_) {
        if (!IsLive(m)) continue;
        anyone_left = true;
        workers_left |= m.role == TierRole::kWorker;
      }
      if (!workers_left && !terminate_sent_) {
        terminate_sent_ = true;
        BroadcastLocked(Command::kTerminate, Buffer(), group::kServers);
      }
      ReleaseBarriersLocked();
      if (!anyone_left) {
        done_ = true;
        cv_.notify_all();
      }
      break;
    }
    case Command::kAbort: {
      std::string why = msg.segments.empty() ? "unknown" : DecodeText(msg.segments[0]);
      FailLocked(absl::StrCat(why, " (reported by ", Describe(h.sender), ")"), true);
      break;
    }
    default:
      log::Warn("%s scheduler: dropped unexpected %s", options_.name, msg.DebugString());
  }
}

void Tier::AssignIds() {
  // Servers by rank hint (a global server keeps its global rank in the
  // central party), then by arrival; the master worker is worker 0.
  std::vector<NodeInfo> servers, workers;
  for (const auto& p : pending_) (p.role == TierRole::kServer ? servers : workers).push_back(p);
  std::stable_sort(servers.begin(), servers.end(), [](const NodeInfo& a, const NodeInfo& b) {
    auto key = [](const NodeInfo& n) { return n.rank_hint < 0 ? INT32_MAX : n.rank_hint; };
    return key(a) < key(b);
  });
  std::stable_sort(workers.begin(), workers.end(),
                   [](const NodeInfo& a, const NodeInfo& b) { return a.master > b.master; });
  NodeInfo self;
  self.id = kSchedulerId;
  self.role = TierRole::kScheduler;
  self.host = options_.cluster.scheduler_host;
  self.port = options_.cluster.scheduler_port;
  nodes_ = {self};
  for (size_t i = 0; i < servers.size(); ++i) {
    servers[i].rank = static_cast<int>(i);
    servers[i].id = ServerId(static_cast<int>(i));
    nodes_.push_back(servers[i]);
  }
  for (size_t i = 0; i < workers.size(); ++i) {
    workers[i].rank = static_cast<int>(i);
    workers[i].id = WorkerId(static_cast<int>(i));
    nodes_.push_back(workers[i]);
  }
  Buffer table = EncodeNodeTable(nodes_);
  absl::Time now = absl::Now();
  for (const auto& n : nodes_) {
    if (n.role == TierRole::kScheduler) continue;
    log::Verbose(1, "%s scheduler: assigned %s", options_.name, n.DebugString());
    if (auto s = transport_->Connect(n.id, n.host, n.port); !s.ok()) {
      FailLocked(absl::StrCat("cannot connect to ", n.DebugString(), ": ", s.message()), true);
      return;
    }
    last_seen_[n.id] = now;
    SendControl(n.id, Command::kNodeTable, table);
  }
  table_ready_ = true;
  pending_.clear();
  log::Info("%s tier up: %d servers, %d workers", options_.name, servers.size(), workers.size());
}

void Tier::ReleaseBarriersLocked() {
  for (auto& [mask, waiting] : barrier_waiting_) {
    if (waiting.empty()) continue;
    size_t live = 0;
    for (const auto& n : nodes_) live += IsLive(n) && (GroupOf(n.role) & mask);
    if (waiting.size() < live) continue;
    for (int id : waiting) SendControl(id, Command::kBarrierDone);
    waiting.clear();
  }
}

void Tier::SchedulerTick() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!health_.ok() || done_) return;
  absl::Time now = absl::Now();
  if (!table_ready_) {
    if (now - started_at_ > options_.startup_timeout) {
      int servers = 0;
      for (const auto& p : pending_) servers += p.role == TierRole::kServer;
      FailLocked(absl::StrFormat("%s tier: after %s only %d of %d servers and %d of %d workers "
                                 "have registered",
                                 options_.name, absl::FormatDuration(options_.startup_timeout),
                                 servers, options_.cluster.num_servers,
                                 static_cast<int>(pending_.size()) - servers,
                                 options_.cluster.num_workers),
                 true);
    }
    return;
  }
  for (const auto& n : nodes_) {
    if (!IsLive(n)) continue;
    absl::Duration silent = now - last_seen_[n.id];
    if (silent > options_.heartbeat_timeout) {
      FailLocked(absl::StrFormat("%s has been silent for %s (PS_HEARTBEAT_TIMEOUT): it died or "
                                 "is unreachable",
                                 Describe(n.id), absl::FormatDuration(silent)),
                 true);
      return;
    }
  }
}

absl::Status Tier::WaitDone() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return done_ || !health_.ok(); });
  return health_;
}

}  // namespace geops
