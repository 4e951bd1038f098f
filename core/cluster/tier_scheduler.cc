#include "core/cluster/tier_scheduler.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "core/base/log.h"

namespace geops {

std::unique_ptr<TierScheduler> TierScheduler::Create(TierOptions options,
                                                     std::unique_ptr<Transport> transport) {
  return std::unique_ptr<TierScheduler>(
      new TierScheduler(std::move(options), std::move(transport)));
}

TierScheduler::TierScheduler(TierOptions options, std::unique_ptr<Transport> transport)
    : Tier(std::move(options), std::move(transport)) {}

TierScheduler::~TierScheduler() { Stop(); }

absl::Status TierScheduler::Start() {
  const TierConfig& c = options_.cluster;
  auto port = transport_->Listen(c.scheduler_addr, c.scheduler_port);
  if (!port.ok()) return port.status();
  my_id_ = kSchedulerId;
  my_rank_ = 0;
  started_at_ = absl::Now();
  last_tick_ = started_at_;
  log::Verbose(1, "%s scheduler listening on %s:%d, waiting for %d servers and %d workers",
               options_.label, c.scheduler_addr, *port, c.num_servers, c.num_workers);
  StartReceiving(nullptr);
  return absl::OkStatus();
}

bool TierScheduler::AcceptedLocked(const Message& msg) {
  const Header& h = msg.header;
  if (h.command == Command::kRegister) {
    if (h.sender == 0) return true;
    Reject(msg, "a registration must come from a node without an id");
    return false;
  }
  if (h.command == Command::kAbort && h.sender == 0) {
    // A node whose process failed before the node table came: only one we
    // hold a registration of, speaking on that registration's connection.
    // (Or one whose id was assigned while its abort was on the way.)
    for (const auto& p : pending_) {
      if (msg.origin != 0 && p.origin == msg.origin) return true;
    }
    for (const auto& [id, origin] : origin_of_) {
      if (msg.origin != 0 && origin == msg.origin) return true;
    }
    Reject(msg, "an abort from a node that has not registered on this connection");
    return false;
  }
  switch (h.command) {
    case Command::kBarrier:
    case Command::kHeartbeat:
    case Command::kExit:
    case Command::kAbort: {
      const NodeInfo* n = Find(h.sender);
      if (n == nullptr || n->role == Role::kScheduler) {
        Reject(msg, "the sender is not in the node table");
        return false;
      }
      return SpeaksOnItsConnectionLocked(msg);
    }
    default:
      Reject(msg, "not a command a scheduler accepts");
      return false;
  }
}

std::string TierScheduler::CheckRegistrationLocked(const NodeInfo& n) const {
  for (const auto& p : pending_) {
    const NodeInfo& o = p.info;
    if (n.master && o.master) {
      return absl::StrFormat(
          "two workers set DMLC_ROLE_MASTER_WORKER=1 (%s and %s): exactly one worker of the "
          "central party is the master worker",
          o.Address(), n.Address());
    }
    if (n.central_flag >= 0 && o.central_flag >= 0 && n.central_flag != o.central_flag) {
      return absl::StrFormat(
          "DMLC_ENABLE_CENTRAL_WORKER differs inside the %s tier: \"%d\" at the %s at %s but "
          "\"%d\" at the %s at %s: set it the same on every process of the party",
          options_.label, o.central_flag, RoleName(o.role), o.Address(), n.central_flag,
          RoleName(n.role), n.Address());
    }
    if (n.num_all_workers > 0 && o.num_all_workers > 0 &&
        n.num_all_workers != o.num_all_workers) {
      return absl::StrFormat(
          "DMLC_NUM_ALL_WORKER differs inside the %s tier: \"%d\" at the %s at %s but \"%d\" "
          "at the %s at %s: it counts the training workers of the whole cluster and must be the "
          "same everywhere",
          options_.label, o.num_all_workers, RoleName(o.role), o.Address(),
          n.num_all_workers, RoleName(n.role), n.Address());
    }
  }
  return "";
}

void TierScheduler::OnRegisterLocked(Message&& msg) {
  if (msg.segments.size() != 1) {
    Reject(msg, "a registration without a node record");
    return;
  }
  auto info = DecodeNodeInfo(msg.segments[0]);
  if (!info.ok()) {
    Reject(msg, std::string(info.status().message()));
    return;
  }
  if (info->role == Role::kScheduler) {
    Reject(msg, "a scheduler cannot register with a scheduler");
    return;
  }
  for (const auto& p : pending_) {
    // A repeat: the node checks that we still hold its registration.
    if (msg.origin != 0 && p.origin == msg.origin) {
      SendControl(p.temp_id, health_.ok() ? Command::kRegisterAck : Command::kAbort,
                  health_.ok() ? Buffer() : EncodeText(std::string(health_.message())));
      return;
    }
  }
  if (table_ready_) {
    for (const auto& [id, origin] : origin_of_) {
      if (msg.origin != 0 && origin == msg.origin) return;  // its table is on the way
    }
  }
  if (!health_.ok()) {
    // Too late: the tier has already stopped. Say why.
    int temp_id = next_temp_id_--;
    if (transport_->Connect(temp_id, info->host, info->port).ok()) {
      SendControl(temp_id, Command::kAbort, EncodeText(std::string(health_.message())));
      ++told_of_abort_;
      cv_.notify_all();
    }
    return;
  }
  // The path back: the acknowledgement, and any abort before the table.
  // The node binds the scheduler to this one connection, so the table
  // later travels on it too (Alias in AssignIdsLocked).
  int temp_id = next_temp_id_--;
  if (auto s = transport_->Connect(temp_id, info->host, info->port); !s.ok()) {
    log::Warn("%s scheduler: cannot answer the %s at %s: %s", options_.label,
              RoleName(info->role), info->Address(), s.message());
    return;
  }
  int want = info->role == Role::kServer ? options_.cluster.num_servers
                                             : options_.cluster.num_workers;
  int have = 0;
  for (const auto& p : pending_) have += p.info.role == info->role;
  if (table_ready_ || have >= want) {
    // Tell the surplus node why instead of letting it wait forever.
    std::string why = absl::StrFormat(
        "the %s tier already has its %d %ss (DMLC_NUM_%s%s=%d); %s:%d is one too many",
        options_.label, want, RoleName(info->role), global() ? "GLOBAL_" : "",
        info->role == Role::kServer ? "SERVER" : "WORKER", want, info->host, info->port);
    log::Error("%s scheduler: %s", options_.label, why);
    SendControl(temp_id, Command::kAbort, EncodeText(why));
    return;
  }
  if (std::string problem = CheckRegistrationLocked(*info); !problem.empty()) {
    // A misconfigured cluster cannot complete: stop it now, not at the
    // start-up timeout.
    SendControl(temp_id, Command::kAbort, EncodeText(problem));
    FailAndTellLocked(problem);
    ++told_of_abort_;  // the node just refused
    return;
  }
  log::Verbose(1, "%s scheduler: %s registered from %s (%d/%d)", options_.label,
               RoleName(info->role), info->Address(), have + 1, want);
  pending_.push_back({*info, msg.origin, temp_id});
  SendControl(temp_id, Command::kRegisterAck);
  if (static_cast<int>(pending_.size()) ==
      options_.cluster.num_servers + options_.cluster.num_workers) {
    AssignIdsLocked();
  }
}

void TierScheduler::Handle(Message&& msg) {
  const Header& h = msg.header;
  std::lock_guard<std::mutex> lock(mu_);
  if (!AcceptedLocked(msg)) return;
  if (h.sender != 0) last_seen_[h.sender] = absl::Now();
  switch (h.command) {
    case Command::kRegister: return OnRegisterLocked(std::move(msg));
    case Command::kBarrier: return OnBarrierLocked(msg);
    case Command::kHeartbeat: return SendControl(h.sender, Command::kHeartbeatAck);
    case Command::kExit: return OnExitLocked(msg);
    case Command::kAbort: return OnAbortReportLocked(msg);
    default: return;  // AcceptedLocked let nothing else through
  }
}

void TierScheduler::OnBarrierLocked(const Message& msg) {
  if (msg.segments.size() != 1) return;
  auto mask = DecodeU32(msg.segments[0]);
  if (!mask.ok() || *mask == 0 || (*mask & ~group::kAll)) return;
  barrier_waiting_[*mask].push_back(msg.header.sender);
  ReleaseBarriersLocked();
}

void TierScheduler::OnExitLocked(const Message& msg) {
  const int id = msg.header.sender;
  if (!Find(id)) return;
  exited_[id] = true;
  log::Verbose(1, "%s scheduler: %s exited", options_.label, Describe(id));
  SendControl(id, Command::kShutdown);
  bool workers_left = false, anyone_left = false;
  for (const auto& m : nodes_) {
    if (!IsLive(m)) continue;
    anyone_left = true;
    workers_left |= m.role == Role::kWorker;
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
}

void TierScheduler::OnAbortReportLocked(const Message& msg) {
  std::string why = msg.segments.empty() ? "unknown" : DecodeText(msg.segments[0]);
  std::string who = Describe(msg.header.sender);
  if (msg.header.sender == 0) {
    for (const auto& p : pending_) {
      if (p.origin == msg.origin) {
        who = absl::StrFormat("the %s at %s, before the node table", RoleName(p.info.role),
                              p.info.Address());
      }
    }
    for (const auto& [id, origin] : origin_of_) {
      if (origin == msg.origin) who = Describe(id);
    }
  }
  FailAndTellLocked(absl::StrCat(why, " (reported by ", who, ")"));
}

void TierScheduler::DecideTrainersLocked(std::vector<NodeInfo>& workers, bool central) const {
  // GeoMX reads DMLC_ENABLE_CENTRAL_WORKER on the global servers; geops
  // lets any process of the central party carry it (conflicts were refused
  // at registration) and decides here, once, for the whole tier.
  bool central_on = false;
  for (const auto& p : pending_) central_on |= p.info.central_flag == 1;
  for (auto& w : workers) {
    w.trains = central ? central_on : (!w.master || w.central_flag == 1);
  }
}

void TierScheduler::AssignIdsLocked() {
  // Servers by rank hint (a global server keeps its global rank in the
  // central party), then by arrival; the master worker is worker 0.
  std::vector<NodeInfo> servers, workers;
  std::map<std::string, const Pending*> by_address;
  bool central = false;
  for (const auto& p : pending_) {
    (p.info.role == Role::kServer ? servers : workers).push_back(p.info);
    by_address[p.info.Address()] = &p;
    central |= p.info.global_server;
  }
  std::stable_sort(servers.begin(), servers.end(), [](const NodeInfo& a, const NodeInfo& b) {
    auto key = [](const NodeInfo& n) { return n.rank_hint < 0 ? INT32_MAX : n.rank_hint; };
    return key(a) < key(b);
  });
  std::stable_sort(workers.begin(), workers.end(),
                   [](const NodeInfo& a, const NodeInfo& b) { return a.master > b.master; });
  DecideTrainersLocked(workers, central);
  if (!global()) {
    int trainers = 0, all = 0;
    for (const auto& w : workers) trainers += w.trains;
    for (const auto& p : pending_) all = std::max(all, p.info.num_all_workers);
    if (all > 0 && all < trainers) {
      FailAndTellLocked(
          absl::StrFormat("DMLC_NUM_ALL_WORKER=\"%d\" is less than the %d training workers "
                          "of the %s tier alone: it counts every training worker of the "
                          "cluster",
                          all, trainers, options_.label));
      return;
    }
  }
  NodeInfo self;
  self.id = kSchedulerId;
  self.role = Role::kScheduler;
  self.host = options_.cluster.scheduler_addr;
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
    if (n.role == Role::kScheduler) continue;
    log::Verbose(1, "%s scheduler: assigned %s", options_.label, n.DebugString());
    const Pending* p = by_address[n.Address()];
    // From now on the node speaks as n.id on the connection it registered
    // on, and hears us on the path it already knows.
    origin_of_[n.id] = p->origin;
    if (auto s = transport_->Alias(n.id, p->temp_id); !s.ok()) {
      FailAndTellLocked(absl::StrCat("cannot reach ", n.DebugString(), ": ", s.message()));
      return;
    }
    last_seen_[n.id] = now;
    SendControl(n.id, Command::kNodeTable, table);
  }
  table_ready_ = true;
  pending_.clear();
  log::Info("%s tier up: %d servers, %d workers", options_.label, servers.size(), workers.size());
}

void TierScheduler::ReleaseBarriersLocked() {
  for (auto& [mask, waiting] : barrier_waiting_) {
    if (waiting.empty()) continue;
    size_t live = 0;
    for (const auto& n : nodes_) live += IsLive(n) && (group::Of(n.role) & mask);
    if (waiting.size() < live) continue;
    for (int id : waiting) SendControl(id, Command::kBarrierDone);
    waiting.clear();
  }
}

void TierScheduler::Tick() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!health_.ok() || done_) return;
  absl::Time now = absl::Now();
  if (now - last_tick_ > options_.heartbeat_timeout / 2) {
    // We were not running (SIGSTOP, a debugger, swapping): the nodes' silence
    // is ours. Give every node a fresh timeout instead of declaring them dead.
    log::Warn("%s scheduler: this process was paused for %s; restarting the liveness clocks",
              options_.label, absl::FormatDuration(now - last_tick_));
    for (auto& [id, seen] : last_seen_) seen = now;
  }
  last_tick_ = now;
  if (!table_ready_) {
    if (now - started_at_ > options_.startup_timeout) {
      int servers = 0;
      for (const auto& p : pending_) servers += p.info.role == Role::kServer;
      FailAndTellLocked(
          absl::StrFormat("%s tier: after %s only %d of %d servers and %d of %d workers "
                          "have registered",
                          options_.label, absl::FormatDuration(options_.startup_timeout), servers,
                          options_.cluster.num_servers, static_cast<int>(pending_.size()) - servers,
                          options_.cluster.num_workers));
    }
    return;
  }
  for (const auto& n : nodes_) {
    if (!IsLive(n)) continue;
    absl::Duration silent = now - last_seen_[n.id];
    if (silent > options_.heartbeat_timeout) {
      FailAndTellLocked(absl::StrFormat(
          "%s has been silent for %s (%s): it died or is unreachable%s", Describe(n.id),
          absl::FormatDuration(silent),
          global() ? "GEOPS_GLOBAL_HEARTBEAT_TIMEOUT" : "PS_HEARTBEAT_TIMEOUT",
          global() && !n.party_name.empty()
              ? absl::StrFormat(" (the link between party %s and the "
                                "central party may be down)",
                                n.party_name)
              : ""));
      return;
    }
  }
}

absl::Status TierScheduler::WaitDone() {
  std::unique_lock<std::mutex> lock(mu_);
  const int expected = options_.cluster.num_servers + options_.cluster.num_workers;
  auto finished = [&] {
    if (done_) return true;
    if (health_.ok()) return false;
    return table_ready_ || told_of_abort_ >= expected ||
           absl::Now() - failed_at_ >= options_.connect_timeout;
  };
  while (!finished()) cv_.wait_for(lock, std::chrono::milliseconds(100));
  return health_;
}

bool TierScheduler::IsLive(const NodeInfo& n) const {
  auto it = exited_.find(n.id);
  return n.role != Role::kScheduler && (it == exited_.end() || !it->second);
}

void TierScheduler::BroadcastLocked(Command cmd, const Buffer& body, uint32_t group_mask) {
  for (const auto& n : nodes_) {
    if ((group::Of(n.role) & group_mask) == 0 || !IsLive(n)) continue;
    SendControl(n.id, cmd, body);
  }
}

void TierScheduler::FailAndTellLocked(const std::string& reason) {
  if (!FailLocked(reason)) return;
  failed_at_ = absl::Now();
  BroadcastLocked(Command::kAbort, EncodeText(reason), group::kServers | group::kWorkers);
  // Nodes still waiting for a node table are not in it yet: tell them on
  // their temporary ids, or they would wait out their start-up timeout.
  for (const auto& p : pending_) SendControl(p.temp_id, Command::kAbort, EncodeText(reason));
  told_of_abort_ += static_cast<int>(pending_.size());
}

}  // namespace geops
