#include "core/cluster/tier.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/base/log.h"

namespace geops {
namespace {

constexpr absl::Duration kPollSlice = absl::Milliseconds(100);

}  // namespace

TierOptions MakeTierOptions(const Config& c, bool global, Role role) {
  TierOptions o;
  o.kind = global ? TierKind::kGlobal : TierKind::kLocal;
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

Tier::Tier(TierOptions options, std::unique_ptr<Transport> transport)
    : options_(std::move(options)), transport_(std::move(transport)) {}

Tier::~Tier() = default;

void Tier::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_.store(true);
  }
  cv_.notify_all();
  transport_->Shutdown();
  if (receiver_.joinable()) receiver_.join();
}

std::string Tier::StatsText() const {
  const TransportStats& s = stats();
  const std::string_view n = name();
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
  if (global() && n->role == Role::kWorker) {
    return absl::StrFormat("the server of party %s (global-tier worker rank %d, node %d at %s)",
                           n->party_name, n->rank, id, n->Address());
  }
  if (global()) {
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

void Tier::StartReceiving(std::function<void()> on_idle) {
  receiver_ = std::thread([this, on_idle = std::move(on_idle)] { ReceiveLoop(on_idle); });
}

void Tier::ReceiveLoop(const std::function<void()>& on_idle) {
  bool busy = false;  // handled messages since the queue was last empty
  while (!stopping_.load()) {
    // With an idle handler, look once more without waiting before calling it.
    auto msg = transport_->Receive(busy && on_idle ? absl::ZeroDuration() : kPollSlice);
    Tick();
    NotifyAbortOnce();
    if (!msg.ok()) {
      if (absl::IsCancelled(msg.status())) return;
      if (absl::IsDeadlineExceeded(msg.status())) {
        if (busy && on_idle) on_idle();
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

bool Tier::FailLocked(const std::string& reason) {
  if (!health_.ok()) return false;
  health_ = absl::AbortedError(reason);
  log::Error("%s tier stopped: %s", options_.label, reason);
  cv_.notify_all();
  return true;
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

}  // namespace geops
