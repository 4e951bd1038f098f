#include "transport/rdma_transport.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <sys/resource.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "core/base/log.h"
#include "core/wire/codec.h"

namespace geops {
namespace {

// rdma_cm private data: "GEOPS1", a length byte and the shared secret on
// connect; "GEOPS1" and 0xff on a refusal because of it. IB carries at most
// 56 bytes in a connect request and pads what it carries.
constexpr char kCmTag[] = "GEOPS1";
constexpr size_t kCmTagLen = 6;
constexpr uint8_t kCmRefusedSecret = 0xff;

std::string ConnectPrivateData(const std::string& secret) {
  std::string d(kCmTag, kCmTagLen);
  d.push_back(static_cast<char>(secret.size()));
  d += secret;
  return d;
}

bool SecretMatches(const void* data, size_t len, const std::string& secret) {
  std::string want = ConnectPrivateData(secret);
  if (secret.empty()) return true;  // no secret configured: accept anyone
  return data != nullptr && len >= want.size() && std::memcmp(data, want.data(), want.size()) == 0;
}

bool RefusedForSecret(const void* data, size_t len) {
  return data != nullptr && len > kCmTagLen && std::memcmp(data, kCmTag, kCmTagLen) == 0 &&
         static_cast<const uint8_t*>(data)[kCmTagLen] == kCmRefusedSecret;
}

// A queue pair is one connection: its number is the message's origin.
uint64_t OriginOfQp(uint32_t qp_num) { return (uint64_t{1} << 32) | qp_num; }

// Every SEND starts with this frame header.
enum FrameType : uint32_t { kEager = 1, kRts = 2, kCts = 3 };
struct Frame {
  uint32_t type;
  uint32_t count;  // CTS: number of targets
  uint64_t id;     // RTS/CTS: the sender's rendezvous id
};
struct CtsTarget {
  uint64_t addr;
  uint32_t rkey;
  uint32_t token;  // the receiver's id for this message (same in every entry)
};
static_assert(sizeof(Frame) == 16 && sizeof(CtsTarget) == 16);

constexpr uint64_t kRecvFlag = uint64_t{1} << 63;
constexpr int kResolveTimeoutMs = 2000;

std::string CmEventName(rdma_cm_event_type t) { return rdma_event_str(t); }

absl::Status Errno(const std::string& what) {
  return absl::UnavailableError(absl::StrFormat("rdma: %s: %s", what, std::strerror(errno)));
}

absl::StatusOr<sockaddr_in> Resolve(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  addrinfo* res = nullptr;
  if (getaddrinfo(host.c_str(), nullptr, &hints, &res) != 0 || res == nullptr) {
    return absl::InvalidArgumentError(absl::StrFormat("rdma: cannot resolve %s", host));
  }
  sockaddr_in a = *reinterpret_cast<sockaddr_in*>(res->ai_addr);
  freeaddrinfo(res);
  a.sin_port = htons(static_cast<uint16_t>(port));
  return a;
}

bool IsValuesSegment(const Message& m, size_t i) {
  return m.header.command == Command::kData && i >= 1;
}

}  // namespace

// A rendezvous send waiting for its CTS, then its writes.
struct RdmaTransport::WriteJob {
  Message msg;
  std::vector<CtsTarget> targets;  // filled from the CTS
  int peer = 0;
};

struct RdmaTransport::Conn {
  rdma::CmIdPtr id;
  bool outgoing = false;
  int peer = -1;
  std::string host;
  int port = 0;
  enum class State { kConnecting, kUp, kDown } state = State::kConnecting;
  absl::Time deadline;
  absl::Time retry_at = absl::InfiniteFuture();
  int attempts = 0;
  std::string error;

  std::mutex mu;  // guards posting on the QP and everything below
  std::deque<Outgoing> backlog;
  int sq_used = 0;
  uint64_t next_seq = 0;
  int unsignaled = 0;
  // Resources of posted work requests, released when a signalled request
  // at or after their sequence number completes.
  std::deque<std::pair<uint64_t, std::vector<Buffer>>> held;
};

absl::StatusOr<std::unique_ptr<RdmaTransport>> RdmaTransport::Create(RdmaOptions options) {
  int n = 0;
  ibv_device** list = ibv_get_device_list(&n);
  if (list) ibv_free_device_list(list);
  if (n == 0) {
    return absl::FailedPreconditionError(
        "rdma: no RDMA device on this machine (ibv_get_device_list found none): load a driver "
        "or SoftRoCE (deploy/softroce/softroce.sh up <netdev>), pass /dev/infiniband to the "
        "container, or unset DMLC_PS_VAN_TYPE / DMLC_ENABLE_RDMA to use TCP");
  }
  std::unique_ptr<RdmaTransport> t(new RdmaTransport(options));
  t->events_.reset(rdma_create_event_channel());
  if (!t->events_) return Errno("rdma_create_event_channel");
  t->cm_thread_ = std::thread([p = t.get()] { p->CmLoop(); });
  return t;
}

RdmaTransport::RdmaTransport(RdmaOptions options) : options_(options) {}

RdmaTransport::~RdmaTransport() {
  Shutdown();
  if (cm_thread_.joinable()) cm_thread_.join();
  if (progress_thread_.joinable()) progress_thread_.join();
  {
    std::lock_guard<std::mutex> lock(conns_mu_);
    for (auto& c : conns_) {
      if (c->id && c->state == Conn::State::kUp) rdma_disconnect(c->id.get());
    }
    peers_.clear();
    by_qp_.clear();
    conns_.clear();  // destroys QPs and ids
  }
  {
    std::lock_guard<std::mutex> lock(slots_mu_);
    posted_slots_.clear();
    free_slots_.clear();
  }
  pending_recvs_.clear();
  pending_sends_.clear();
  expected_.clear();
  queue_.clear();
  listen_id_.reset();
  if (srq_) ibv_destroy_srq(srq_);
  cq_.reset();
  comp_channel_.reset();
  // Registrations still held by live Buffers keep the device, and so the
  // protection domain, alive; the last of them deallocates it.
  pool_.reset();
  device_.reset();
  events_.reset();
}

void RdmaTransport::Shutdown() {
  stopping_.store(true);
  queue_cv_.notify_all();
}

absl::Status RdmaTransport::InitDevice(ibv_context* verbs) {
  if (verbs_ != nullptr) {
    if (verbs != verbs_) {
      return absl::FailedPreconditionError(
          "rdma: peers are reached through two different RDMA devices; bind this node to one "
          "(DMLC_NODE_HOST / DMLC_INTERFACE)");
    }
    return absl::OkStatus();
  }
  verbs_ = verbs;
  device_ = std::make_shared<rdma::Device>();
  device_->pd = ibv_alloc_pd(verbs);
  if (device_->pd == nullptr) return Errno("ibv_alloc_pd");
  comp_channel_.reset(ibv_create_comp_channel(verbs));
  if (!comp_channel_) return Errno("ibv_create_comp_channel");
  ibv_device_attr attr{};
  ibv_query_device(verbs, &attr);
  int cqe = std::min(attr.max_cqe, 16384);
  cq_.reset(ibv_create_cq(verbs, cqe, nullptr, comp_channel_.get(), 0));
  if (!cq_) return Errno("ibv_create_cq");
  ibv_srq_init_attr sa{};
  sa.attr.max_wr = std::min(options_.srq_depth, attr.max_srq_wr);
  sa.attr.max_sge = 1;
  srq_ = ibv_create_srq(device_->pd, &sa);
  if (!srq_) return Errno("ibv_create_srq");
  options_.srq_depth = static_cast<int>(sa.attr.max_wr);
  options_.send_depth = std::min(options_.send_depth, attr.max_qp_wr);
  device_->limit_bytes = options_.mem_limit;
  pool_ = std::make_unique<rdma::RegisteredPool>(device_);
  {
    std::lock_guard<std::mutex> lock(slots_mu_);
    posted_slots_.resize(options_.srq_depth);
    free_slots_.reserve(options_.srq_depth);
    for (int i = options_.srq_depth - 1; i >= 0; --i) free_slots_.push_back(i);
    if (auto s = PostRecvSlotsLocked(); !s.ok()) return s;
  }
  progress_thread_ = std::thread([this] { ProgressLoop(); });
  log::Verbose(1, "rdma: device %s ready (srq %d slots of %d bytes)",
               ibv_get_device_name(verbs->device), options_.srq_depth, options_.slot_bytes);
  return absl::OkStatus();
}

absl::Status RdmaTransport::PostRecvSlotsLocked() {
  // One chain per call: slots are handed back in batches (see
  // HandleCompletion), so posting costs one call per batch, not per message.
  constexpr size_t kChain = 64;
  ibv_sge sges[kChain];
  ibv_recv_wr wrs[kChain];
  while (!free_slots_.empty()) {
    size_t n = 0;
    for (; n < kChain && n < free_slots_.size(); ++n) {
      uint32_t idx = free_slots_[free_slots_.size() - 1 - n];
      Buffer& slot = posted_slots_[idx];
      if (slot.empty()) {
        auto b = pool_->Get(options_.slot_bytes);
        if (!b.ok()) {
          if (n == 0) return b.status();
          break;
        }
        slot = std::move(*b);
      }
      sges[n] = {reinterpret_cast<uintptr_t>(slot.data()), static_cast<uint32_t>(slot.size()),
                 slot.region()->lkey};
      wrs[n] = {};
      wrs[n].wr_id = idx | kRecvFlag;
      wrs[n].sg_list = &sges[n];
      wrs[n].num_sge = 1;
      if (n > 0) wrs[n - 1].next = &wrs[n];
    }
    ibv_recv_wr* bad = nullptr;
    if (ibv_post_srq_recv(srq_, wrs, &bad) != 0) {
      // Whatever came before `bad` is posted.
      size_t posted = 0;
      for (ibv_recv_wr* w = wrs; w != bad && posted < n; w = w->next) ++posted;
      free_slots_.resize(free_slots_.size() - posted);
      return Errno("ibv_post_srq_recv");
    }
    free_slots_.resize(free_slots_.size() - n);
  }
  return absl::OkStatus();
}

absl::StatusOr<int> RdmaTransport::Listen(const std::string& host, int port) {
  auto addr = Resolve(host, port);
  if (!addr.ok()) return addr.status();
  rdma_cm_id* raw = nullptr;
  if (rdma_create_id(events_.get(), &raw, nullptr, RDMA_PS_TCP) != 0) {
    return Errno("rdma_create_id");
  }
  rdma::CmIdPtr id(raw);
  if (rdma_bind_addr(id.get(), reinterpret_cast<sockaddr*>(&*addr)) != 0) {
    if (errno == EADDRINUSE) {
      return absl::UnavailableError(
          absl::StrFormat("rdma: cannot listen on %s:%d: the port is already in use", host, port));
    }
    return Errno(absl::StrFormat("bind to %s:%d", host, port));
  }
  if (id->verbs == nullptr) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "rdma: %s is not the address of an RDMA device; set DMLC_NODE_HOST (or "
        "DMLC_INTERFACE) to the IP of the RDMA netdev (see `rdma link` / `ibv_devinfo`)",
        host));
  }
  if (auto s = InitDevice(id->verbs); !s.ok()) return s;
  if (rdma_listen(id.get(), 128) != 0) return Errno("rdma_listen");
  bound_ = *addr;
  int bound_port = ntohs(rdma_get_src_port(id.get()));
  bound_.sin_port = 0;
  listening_ = true;
  listen_id_ = std::move(id);
  log::Verbose(1, "rdma: listening on %s:%d", host, bound_port);
  return bound_port;
}

std::string RdmaTransport::PeerProblem(int peer_id) const {
  std::shared_ptr<Conn> c;
  {
    std::lock_guard<std::mutex> lock(conns_mu_);
    auto it = peers_.find(peer_id);
    if (it == peers_.end()) return "";
    c = it->second;
  }
  std::lock_guard<std::mutex> lock(c->mu);
  return c->state == Conn::State::kDown ? c->error : "";
}

absl::Status RdmaTransport::Alias(int new_id, int existing_id) {
  std::lock_guard<std::mutex> lock(conns_mu_);
  auto it = peers_.find(existing_id);
  if (it == peers_.end()) {
    return absl::NotFoundError(absl::StrFormat("no connection to node %d", existing_id));
  }
  peers_[new_id] = it->second;
  return absl::OkStatus();
}

absl::Status RdmaTransport::Connect(int peer_id, const std::string& host, int port) {
  auto c = std::make_shared<Conn>();
  c->outgoing = true;
  c->peer = peer_id;
  c->host = host;
  c->port = port;
  c->deadline = absl::Now() + options_.connect_timeout;
  {
    std::lock_guard<std::mutex> lock(conns_mu_);
    auto it = peers_.find(peer_id);
    if (it != peers_.end() && it->second->host == host && it->second->port == port &&
        it->second->state != Conn::State::kDown) {
      return absl::OkStatus();
    }
    conns_.push_back(c);
    peers_[peer_id] = c;
  }
  StartConnect(*c);
  return absl::OkStatus();
}

void RdmaTransport::StartConnect(Conn& c) {
  auto dst = Resolve(c.host, c.port);
  if (!dst.ok()) {
    FailConn(c, std::string(dst.status().message()));
    return;
  }
  rdma_cm_id* raw = nullptr;
  if (rdma_create_id(events_.get(), &raw, &c, RDMA_PS_TCP) != 0) {
    FailConn(c, "rdma_create_id failed");
    return;
  }
  {
    std::lock_guard<std::mutex> lock(c.mu);
    c.id.reset(raw);
    c.state = Conn::State::kConnecting;
  }
  ++c.attempts;
  // Leave from our listening address so that the peer sees the device we
  // registered with, not whatever the routing table prefers.
  sockaddr* src = listening_ ? reinterpret_cast<sockaddr*>(&bound_) : nullptr;
  if (rdma_resolve_addr(raw, src, reinterpret_cast<sockaddr*>(&*dst), kResolveTimeoutMs) != 0) {
    RetryOrFail(c, absl::StrFormat("rdma_resolve_addr: %s", std::strerror(errno)));
  }
}

void RdmaTransport::RetryOrFail(Conn& c, const std::string& why) {
  absl::Time now = absl::Now();
  if (now >= c.deadline || stopping_.load()) {
    FailConn(c, absl::StrFormat(
                    "cannot connect to node %d at %s:%d after %d attempts: %s (is it running and "
                    "listening on an RDMA device? are the addresses right?)",
                    c.peer, c.host, c.port, c.attempts, why));
    return;
  }
  log::Verbose(1, "rdma: connect to node %d at %s:%d failed (%s); retrying", c.peer, c.host,
               c.port, why);
  absl::Duration backoff = std::min(absl::Milliseconds(100) * (1 << std::min(c.attempts, 4)),
                                    absl::Seconds(1));
  std::lock_guard<std::mutex> lock(c.mu);
  c.retry_at = now + backoff;
}

void RdmaTransport::FailConn(Conn& c, const std::string& why) {
  std::deque<Outgoing> dropped;
  {
    std::lock_guard<std::mutex> lock(c.mu);
    if (c.state == Conn::State::kDown) return;
    c.state = Conn::State::kDown;
    c.error = why;
    c.retry_at = absl::InfiniteFuture();
    dropped.swap(c.backlog);
  }
  log::Warn("rdma: %s%s", why,
            dropped.empty() ? "" : absl::StrFormat(" (%d queued messages dropped)", dropped.size()));
}

absl::Status RdmaTransport::CreateQp(Conn& c) {
  ibv_qp_init_attr qa{};
  qa.send_cq = cq_.get();
  qa.recv_cq = cq_.get();
  qa.srq = srq_;
  qa.qp_type = IBV_QPT_RC;
  qa.sq_sig_all = 0;
  qa.cap.max_send_wr = options_.send_depth;
  qa.cap.max_send_sge = 1;
  qa.cap.max_recv_wr = 1;  // receives come from the shared queue
  qa.cap.max_recv_sge = 1;
  qa.cap.max_inline_data = 256;
  if (rdma_create_qp(c.id.get(), device_->pd, &qa) != 0) {
    qa.cap.max_inline_data = 0;  // some devices have no inline support
    if (rdma_create_qp(c.id.get(), device_->pd, &qa) != 0) return Errno("rdma_create_qp");
  }
  max_inline_ = qa.cap.max_inline_data;
  std::lock_guard<std::mutex> lock(conns_mu_);
  by_qp_[c.id->qp->qp_num] = &c;
  return absl::OkStatus();
}

void RdmaTransport::CmLoop() {
  while (!stopping_.load()) {
    pollfd p{events_->fd, POLLIN, 0};
    int rc = poll(&p, 1, 100);
    if (rc > 0) {
      rdma_cm_event* ev = nullptr;
      if (rdma_get_cm_event(events_.get(), &ev) == 0) HandleCmEvent(ev);
    }
    // Scheduled connect retries.
    std::vector<std::shared_ptr<Conn>> due;
    {
      std::lock_guard<std::mutex> lock(conns_mu_);
      absl::Time now = absl::Now();
      for (auto& c : conns_) {
        std::lock_guard<std::mutex> cl(c->mu);
        if (c->retry_at <= now) {
          c->retry_at = absl::InfiniteFuture();
          due.push_back(c);
        }
      }
    }
    for (auto& c : due) {
      rdma::CmIdPtr old;
      {
        std::lock_guard<std::mutex> lock(conns_mu_);
        if (c->id && c->id->qp) by_qp_.erase(c->id->qp->qp_num);
      }
      {
        std::lock_guard<std::mutex> lock(c->mu);
        old = std::move(c->id);
      }
      old.reset();  // every event of the old id has been acknowledged
      StartConnect(*c);
    }
  }
}

void RdmaTransport::HandleCmEvent(rdma_cm_event* ev) {
  rdma_cm_event_type type = ev->event;
  rdma_cm_id* id = ev->id;
  auto* c = static_cast<Conn*>(id->context);
  int status = ev->status;
  log::Verbose(2, "rdma: cm event %s (status %d)", CmEventName(type), status);

  if (type == RDMA_CM_EVENT_CONNECT_REQUEST) {
    // The private data lives in the event: check it before the ack frees it.
    bool admitted = SecretMatches(ev->param.conn.private_data,
                                  ev->param.conn.private_data_len, options_.secret);
    rdma_ack_cm_event(ev);
    if (!admitted) {
      sockaddr* peer = rdma_get_peer_addr(id);
      char addr[INET6_ADDRSTRLEN] = "?";
      if (peer && peer->sa_family == AF_INET) {
        inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(peer)->sin_addr, addr, sizeof(addr));
      }
      uint64_t n = secret_refused_.fetch_add(1) + 1;
      if (n <= 20 || n % 1000 == 0) {
        log::Warn("rdma: refused a connection from %s: it does not carry this tier's "
                  "GEOPS_RDMA_SECRET_FILE secret (%d refused so far)",
                  addr, n);
      }
      std::string refusal(kCmTag, kCmTagLen);
      refusal.push_back(static_cast<char>(kCmRefusedSecret));
      rdma_reject(id, refusal.data(), static_cast<uint8_t>(refusal.size()));
      rdma_destroy_id(id);
      return;
    }
    auto in = std::make_shared<Conn>();
    in->id.reset(id);
    id->context = in.get();
    absl::Status s = InitDevice(id->verbs);
    if (s.ok()) s = CreateQp(*in);
    rdma_conn_param param{};
    param.rnr_retry_count = 7;  // 7: retry forever while the peer's slots are busy
    param.retry_count = 7;
    param.responder_resources = 1;
    param.initiator_depth = 1;
    if (s.ok() && rdma_accept(id, &param) != 0) s = Errno("rdma_accept");
    if (!s.ok()) {
      log::Warn("rdma: refused an incoming connection: %s", s.message());
      rdma_reject(id, nullptr, 0);
      if (id->qp) {
        std::lock_guard<std::mutex> lock(conns_mu_);
        by_qp_.erase(id->qp->qp_num);
      }
    }
    std::lock_guard<std::mutex> lock(conns_mu_);
    conns_.push_back(std::move(in));
    return;
  }
  const bool refused_secret =
      type == RDMA_CM_EVENT_REJECTED &&
      RefusedForSecret(ev->param.conn.private_data, ev->param.conn.private_data_len);
  rdma_ack_cm_event(ev);
  if (c == nullptr) return;
  if (refused_secret && c->outgoing) {
    // Retrying cannot help: say why at once.
    FailConn(*c, absl::StrFormat("node %d at %s:%d refused our connection: this process's "
                                 "GEOPS_RDMA_SECRET_FILE is missing or not the tier's",
                                 c->peer, c->host, c->port));
    return;
  }

  switch (type) {
    case RDMA_CM_EVENT_ADDR_RESOLVED:
      if (rdma_resolve_route(id, kResolveTimeoutMs) != 0) {
        RetryOrFail(*c, absl::StrFormat("rdma_resolve_route: %s", std::strerror(errno)));
      }
      break;
    case RDMA_CM_EVENT_ROUTE_RESOLVED: {
      absl::Status s = InitDevice(id->verbs);
      if (s.ok()) s = CreateQp(*c);
      rdma_conn_param param{};
      param.rnr_retry_count = 7;
      param.retry_count = 7;
      param.responder_resources = 1;
      param.initiator_depth = 1;
      std::string pdata = ConnectPrivateData(options_.secret);
      param.private_data = pdata.data();
      param.private_data_len = static_cast<uint8_t>(pdata.size());
      if (s.ok() && rdma_connect(id, &param) != 0) s = Errno("rdma_connect");
      if (!s.ok()) FailConn(*c, std::string(s.message()));
      break;
    }
    case RDMA_CM_EVENT_ESTABLISHED: {
      std::lock_guard<std::mutex> lock(c->mu);
      c->state = Conn::State::kUp;
      log::Verbose(1, "rdma: %s connection %s", c->outgoing ? "outgoing" : "incoming",
                   c->outgoing ? absl::StrFormat("to node %d at %s:%d", c->peer, c->host, c->port)
                               : "accepted");
      FlushLocked(*c);
      break;
    }
    case RDMA_CM_EVENT_ADDR_ERROR:
    case RDMA_CM_EVENT_ROUTE_ERROR:
    case RDMA_CM_EVENT_UNREACHABLE:
    case RDMA_CM_EVENT_REJECTED:
    case RDMA_CM_EVENT_CONNECT_ERROR:
      if (c->outgoing) {
        RetryOrFail(*c, absl::StrFormat("%s (status %d)", CmEventName(type), status));
      } else {
        FailConn(*c, absl::StrFormat("incoming connection: %s", CmEventName(type)));
      }
      break;
    case RDMA_CM_EVENT_DISCONNECTED:
      rdma_disconnect(id);
      FailConn(*c, c->outgoing
                       ? absl::StrFormat("connection to node %d at %s:%d lost: the peer "
                                         "disconnected",
                                         c->peer, c->host, c->port)
                       : std::string("an incoming connection was closed by its peer"));
      break;
    case RDMA_CM_EVENT_DEVICE_REMOVAL:
      FailConn(*c, "the RDMA device was removed");
      break;
    default:
      // TIMEWAIT_EXIT, ADDR_CHANGE and friends need no action.
      break;
  }
}

RdmaTransport::Conn* RdmaTransport::ConnByQp(uint32_t qp_num) {
  std::lock_guard<std::mutex> lock(conns_mu_);
  auto it = by_qp_.find(qp_num);
  return it == by_qp_.end() ? nullptr : it->second;
}

int RdmaTransport::PollOnce() {
  // Whoever holds the poller lock drains the completion queue: a thread
  // waiting in Receive() polls itself while it spins (no wake-up on the
  // latency path), the progress thread covers everyone else.
  std::unique_lock<std::mutex> lock(poll_mu_, std::try_to_lock);
  if (!lock.owns_lock()) return 0;
  ibv_wc wcs[32];
  int total = 0;
  for (;;) {
    int n = ibv_poll_cq(cq_.get(), 32, wcs);
    if (n <= 0) break;
    for (int i = 0; i < n; ++i) HandleCompletion(wcs[i]);
    total += n;
  }
  if (total > 0) last_work_ns_.store(absl::GetCurrentTimeNanos(), std::memory_order_relaxed);
  return total;
}

bool RdmaTransport::RecentlyBusy() const {
  return absl::GetCurrentTimeNanos() - last_work_ns_.load(std::memory_order_relaxed) <
         absl::ToInt64Nanoseconds(options_.spin);
}

void RdmaTransport::ProgressLoop() {
  const int64_t spin_ns = absl::ToInt64Nanoseconds(options_.spin);
  while (!stopping_.load()) {
    {
      // While a receiver polls, stay out of its way: an armed channel's
      // interrupt and this thread's wake-up would only compete with it for
      // the processor. A receiver that leaves with a message is usually
      // back within microseconds, so this thread takes over only `spin`
      // after the last one left, at once when one goes to sleep (which
      // wakes it), and at most 20 x `spin` late otherwise. No receiver
      // wakes it per message, and it does not tick while they spin.
      std::unique_lock<std::mutex> lock(spin_mu_);
      int64_t now = absl::GetCurrentTimeNanos();
      int64_t grace_end = spin_left_ns_ == 0 ? 0 : spin_left_ns_ + spin_ns;
      if (spinners_ > 0 || now < grace_end) {
        // While someone spins, the timeout only bounds how late this thread
        // notices a receiver that left with a message and never came back.
        int64_t wait = spinners_ > 0 ? 20 * spin_ns : grace_end - now;
        spin_cv_.wait_for(lock, std::chrono::nanoseconds(std::max<int64_t>(wait, 1000)));
        continue;
      }
    }
    if (PollOnce() > 0) continue;
    // Nothing to do: sleep on the completion channel, so that an idle node
    // burns no core and a receiver that spins has the processor to itself.
    ibv_req_notify_cq(cq_.get(), 0);
    if (PollOnce() > 0) continue;  // closes the race with the arm
    pollfd p{comp_channel_->fd, POLLIN, 0};
    if (poll(&p, 1, 100) > 0) {
      ibv_cq* cq = nullptr;
      void* ctx = nullptr;
      if (ibv_get_cq_event(comp_channel_.get(), &cq, &ctx) == 0) ibv_ack_cq_events(cq, 1);
    }
  }
}

void RdmaTransport::HandleCompletion(const ibv_wc& wc) {
  if (wc.wr_id & kRecvFlag) {
    Buffer slot;
    {
      // Keep the shared receive queue (nearly) full: the slot just consumed
      // may be held by the application for a while, so its index gets a
      // fresh slot; they are posted in batches.
      std::lock_guard<std::mutex> lock(slots_mu_);
      uint64_t idx = wc.wr_id & ~kRecvFlag;
      if (idx < posted_slots_.size()) {
        slot = std::move(posted_slots_[idx]);
        posted_slots_[idx] = Buffer();
        free_slots_.push_back(static_cast<uint32_t>(idx));
      }
      size_t batch = std::clamp<size_t>(posted_slots_.size() / 8, 1, 32);
      if (free_slots_.size() >= batch || wc.status != IBV_WC_SUCCESS) {
        if (auto s = PostRecvSlotsLocked(); !s.ok()) log::Error("%s", s.message());
      }
    }
    if (wc.status != IBV_WC_SUCCESS) {
      if (wc.status != IBV_WC_WR_FLUSH_ERR) {
        log::Warn("rdma: receive failed: %s", ibv_wc_status_str(wc.status));
      }
      return;
    }
    Conn* c = ConnByQp(wc.qp_num);
    if (wc.opcode == IBV_WC_RECV_RDMA_WITH_IMM) {
      uint32_t token = ntohl(wc.imm_data);
      PendingRecv pr;
      {
        std::lock_guard<std::mutex> lock(rdv_mu_);
        auto it = pending_recvs_.find(token);
        if (it == pending_recvs_.end()) {
          stats_.malformed.fetch_add(1);
          log::Warn("rdma: write completion for unknown message %d; dropped", token);
          return;
        }
        pr = std::move(it->second);
        pending_recvs_.erase(it);
      }
      Deliver(wire::Decode({pr.header.data(), pr.header.size()}, std::move(pr.targets)),
              pr.origin);
      return;
    }
    HandleRecv(c, slot.Slice(0, wc.byte_len), OriginOfQp(wc.qp_num));
    return;
  }

  Conn* c = ConnByQp(wc.qp_num);
  if (wc.status != IBV_WC_SUCCESS) {
    if (c) {
      FailConn(*c, absl::StrFormat("send to %s failed: %s",
                                   c->outgoing ? absl::StrFormat("node %d", c->peer)
                                               : std::string("a peer"),
                                   ibv_wc_status_str(wc.status)));
      std::lock_guard<std::mutex> lock(c->mu);
      c->held.clear();
      c->sq_used = 0;
    }
    return;
  }
  if (c) OnSendCompletion(*c, wc.wr_id);
}

void RdmaTransport::OnSendCompletion(Conn& c, uint64_t seq) {
  std::vector<std::vector<Buffer>> release;  // dropped outside the lock
  std::lock_guard<std::mutex> lock(c.mu);
  while (!c.held.empty() && c.held.front().first <= seq) {
    release.push_back(std::move(c.held.front().second));
    c.held.pop_front();
    --c.sq_used;
  }
  FlushLocked(c);
}

void RdmaTransport::HandleRecv(Conn* c, Buffer slot, uint64_t origin) {
  if (slot.size() < sizeof(Frame)) {
    stats_.malformed.fetch_add(1);
    log::Warn("rdma: dropped a %d-byte frame", slot.size());
    return;
  }
  Frame f;
  std::memcpy(&f, slot.data(), sizeof(f));
  Buffer body = slot.Slice(sizeof(Frame), slot.size() - sizeof(Frame));
  switch (f.type) {
    case kEager:
      Deliver(wire::DecodeFlat(body), origin);
      return;
    case kRts: {
      auto info = wire::DecodeHeader({body.data(), body.size()});
      if (!info.ok() || c == nullptr) {
        stats_.malformed.fetch_add(1);
        log::Warn("rdma: dropped a rendezvous request: %s",
                  info.ok() ? "unknown connection" : info.status().message());
        return;
      }
      const Header& h = info->header;
      std::vector<Buffer> targets(info->lengths.size());
      {
        // A pull that announced its destination lands in it.
        std::lock_guard<std::mutex> lock(rdv_mu_);
        auto it = expected_.find({h.sender, h.timestamp});
        if (it != expected_.end() && !(h.flags & msgflag::kRequest)) {
          for (size_t i = 1; i < targets.size() && i - 1 < it->second.size(); ++i) {
            const Buffer& dst = it->second[i - 1];
            if (dst.size() == info->lengths[i] && EnsureRegistered(device_, dst).ok()) {
              targets[i] = dst;
            }
          }
          expected_.erase(it);
        }
      }
      uint64_t rest = 0;
      for (size_t i = 0; i < targets.size(); ++i) {
        if (targets[i].empty()) rest += info->lengths[i];
      }
      Buffer landing;
      if (rest > 0) {
        auto b = pool_->Get(rest);
        if (!b.ok()) {
          log::Error("%s; message from node %d dropped", b.status().message(), h.sender);
          stats_.malformed.fetch_add(1);
          return;
        }
        landing = std::move(*b);
      }
      uint64_t off = 0;
      for (size_t i = 0; i < targets.size(); ++i) {
        if (!targets[i].empty()) continue;
        targets[i] = landing.Slice(off, info->lengths[i]);
        off += info->lengths[i];
      }
      uint32_t token;
      std::vector<CtsTarget> cts(targets.size());
      {
        std::lock_guard<std::mutex> lock(rdv_mu_);
        token = next_token_++;
        if (next_token_ == 0) next_token_ = 1;
        for (size_t i = 0; i < targets.size(); ++i) {
          const MemoryRegion* r = targets[i].size() ? targets[i].region() : nullptr;
          cts[i] = {reinterpret_cast<uint64_t>(targets[i].data()), r ? r->rkey : 0, token};
        }
        pending_recvs_[token] = {Buffer::CopyOf(body.data(), body.size()), std::move(targets),
                                 origin};
      }
      Buffer frame = Buffer::Allocate(sizeof(Frame) + cts.size() * sizeof(CtsTarget));
      Frame out{kCts, static_cast<uint32_t>(cts.size()), f.id};
      std::memcpy(frame.data(), &out, sizeof(out));
      if (!cts.empty()) {
        std::memcpy(frame.data() + sizeof(Frame), cts.data(), cts.size() * sizeof(CtsTarget));
      }
      std::lock_guard<std::mutex> lock(c->mu);
      Outgoing answer = std::move(frame);
      bool posted = false;
      if (c->backlog.empty()) {
        if (auto s = PostLocked(*c, answer, &posted); !s.ok()) {
          log::Warn("rdma: cannot answer a rendezvous: %s", s.message());
          return;
        }
      }
      if (!posted) c->backlog.push_back(std::move(answer));
      return;
    }
    case kCts: {
      std::shared_ptr<WriteJob> job;
      {
        std::lock_guard<std::mutex> lock(rdv_mu_);
        auto it = pending_sends_.find(f.id);
        if (it != pending_sends_.end()) {
          job = std::move(it->second);
          pending_sends_.erase(it);
        }
      }
      if (!job || body.size() != f.count * sizeof(CtsTarget) ||
          f.count != job->msg.segments.size() || c == nullptr) {
        stats_.malformed.fetch_add(1);
        log::Warn("rdma: dropped an unexpected rendezvous answer");
        return;
      }
      job->targets.resize(f.count);
      std::memcpy(job->targets.data(), body.data(), body.size());
      std::lock_guard<std::mutex> lock(c->mu);
      Outgoing out = job;
      bool posted = false;
      if (auto s = PostLocked(*c, out, &posted); !s.ok()) {
        log::Warn("rdma: rendezvous writes failed: %s", s.message());
      } else if (!posted) {
        c->backlog.push_back(std::move(out));
      }
      return;
    }
    default:
      stats_.malformed.fetch_add(1);
      log::Warn("rdma: dropped a frame of unknown type %d", f.type);
  }
}

void RdmaTransport::Deliver(absl::StatusOr<Message> decoded, uint64_t origin) {
  if (!decoded.ok()) {
    stats_.malformed.fetch_add(1);
    log::Warn("rdma: dropped a message: %s", decoded.status().message());
    return;
  }
  Message& m = *decoded;
  m.origin = origin;
  if (!(m.header.flags & msgflag::kRequest)) {
    // A response that came eagerly leaves its announced destination unused.
    std::lock_guard<std::mutex> lock(rdv_mu_);
    expected_.erase({m.header.sender, m.header.timestamp});
  }
  stats_.messages_received.fetch_add(1, std::memory_order_relaxed);
  stats_.bytes_received.fetch_add(wire::EncodedHeaderSize(m.segments.size()) + m.payload_bytes(),
                                  std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    queue_.push_back(std::move(m));
  }
  queue_cv_.notify_one();
}

absl::StatusOr<Message> RdmaTransport::Receive(absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  absl::Time spin_until = absl::Now() + options_.spin;
  // Counted as a spinner from here until it blocks or returns. Leaving
  // with a message does not wake the progress thread (see ProgressLoop);
  // going to sleep hands the completion queue over to it at once.
  bool spinning = false;
  auto set_spinning = [&](bool on, bool sleeping) {
    if (on == spinning) return;
    spinning = on;
    std::lock_guard<std::mutex> lock(spin_mu_);
    spinners_ += on ? 1 : -1;
    if (on) return;
    if (sleeping) {
      spin_left_ns_ = 0;
      if (spinners_ == 0) spin_cv_.notify_all();
    } else {
      spin_left_ns_ = absl::GetCurrentTimeNanos();
    }
  };
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(queue_mu_);
      if (stopping_.load() || !queue_.empty()) {
        lock.unlock();
        set_spinning(false, stopping_.load());
        lock.lock();
        if (stopping_.load()) return absl::CancelledError("transport shut down");
        if (!queue_.empty()) {
          Message m = std::move(queue_.front());
          queue_.pop_front();
          return m;
        }
        continue;
      }
      absl::Time now = absl::Now();
      if (now >= deadline || cq_ == nullptr || (now >= spin_until && !RecentlyBusy())) {
        lock.unlock();
        set_spinning(false, true);
        lock.lock();
        if (now >= deadline) return absl::DeadlineExceededError("no message");
        // Nothing lately: block; the progress thread delivers.
        queue_cv_.wait_for(lock, absl::ToChronoNanoseconds(
                                     std::min(deadline - now, absl::Milliseconds(100))));
        spin_until = absl::Now() + options_.spin;
        continue;
      }
    }
    set_spinning(true, false);
    // Poll a batch before looking at the queue and the clock again: both
    // cost more than an empty poll, which is a few loads.
    for (int i = 0; i < 64 && PollOnce() == 0; ++i) {
    }
  }
}

absl::Status RdmaTransport::Register(const Buffer& buf) {
  if (!device_) return absl::FailedPreconditionError("rdma: Register() before Listen()");
  auto r = rdma::EnsureRegistered(device_, buf);
  return r.ok() ? absl::OkStatus() : r.status();
}

bool RdmaTransport::ExpectInto(int peer_id, int timestamp, std::vector<Buffer> targets) {
  std::lock_guard<std::mutex> lock(rdv_mu_);
  expected_[{peer_id, timestamp}] = std::move(targets);
  return true;
}

absl::Status RdmaTransport::Send(const Message& msg) {
  std::shared_ptr<Conn> c;
  {
    std::lock_guard<std::mutex> lock(conns_mu_);
    auto it = peers_.find(msg.header.recipient);
    if (it == peers_.end()) {
      return absl::NotFoundError(absl::StrFormat("no connection to node %d", msg.header.recipient));
    }
    c = it->second;
  }
  std::lock_guard<std::mutex> lock(c->mu);
  if (c->state == Conn::State::kDown) return absl::UnavailableError("rdma: " + c->error);
  stats_.messages_sent.fetch_add(1, std::memory_order_relaxed);
  stats_.bytes_sent.fetch_add(wire::EncodedHeaderSize(msg.segments.size()) + msg.payload_bytes(),
                              std::memory_order_relaxed);
  if (c->state == Conn::State::kUp && c->backlog.empty() &&
      c->sq_used + 1 <= options_.send_depth &&
      sizeof(Frame) + wire::EncodedHeaderSize(msg.segments.size()) + msg.payload_bytes() <=
          options_.slot_bytes) {
    // The common small message: straight onto the wire, no copy of msg.
    return PostEagerLocked(*c, msg);
  }
  Outgoing out = msg;
  if (c->state == Conn::State::kUp && c->backlog.empty()) {
    bool posted = false;
    if (auto s = PostLocked(*c, out, &posted); !s.ok()) return s;
    if (posted) return absl::OkStatus();
  }
  c->backlog.push_back(std::move(out));
  return absl::OkStatus();
}

void RdmaTransport::FlushLocked(Conn& c) {
  while (c.state == Conn::State::kUp && !c.backlog.empty()) {
    bool posted = false;
    if (auto s = PostLocked(c, c.backlog.front(), &posted); !s.ok()) {
      log::Warn("rdma: dropped a queued message: %s", s.message());
      c.backlog.pop_front();
      continue;
    }
    if (!posted) return;  // the send queue is full; a completion resumes us
    c.backlog.pop_front();
  }
}

absl::Status RdmaTransport::PostLocked(Conn& c, Outgoing& out, bool* posted) {
  *posted = false;
  if (auto* frame = std::get_if<Buffer>(&out)) {
    if (c.sq_used + 1 > options_.send_depth) return absl::OkStatus();
    *posted = true;
    return PostControlLocked(c, std::move(*frame));
  }
  if (auto* job = std::get_if<std::shared_ptr<WriteJob>>(&out)) {
    // Writes need one work request per non-empty segment plus the final one.
    if (c.sq_used + static_cast<int>((*job)->msg.segments.size()) + 1 > options_.send_depth) {
      return absl::OkStatus();
    }
    *posted = true;
    return PostWritesLocked(c, **job);
  }
  if (c.sq_used + 1 > options_.send_depth) return absl::OkStatus();
  *posted = true;
  const Message& m = std::get<Message>(out);
  size_t flat = wire::EncodedHeaderSize(m.segments.size()) + m.payload_bytes();
  if (sizeof(Frame) + flat <= options_.slot_bytes) return PostEagerLocked(c, m);
  return PostRtsLocked(c, m);
}

absl::StatusOr<Buffer> RdmaTransport::SendSlot(size_t bytes) { return pool_->Get(bytes); }

absl::Status RdmaTransport::PostEagerLocked(Conn& c, const Message& m) {
  const size_t header_size = wire::EncodedHeaderSize(m.segments.size());
  size_t total = sizeof(Frame) + header_size + m.payload_bytes();
  auto slot = SendSlot(total);
  if (!slot.ok()) return slot.status();
  Frame f{kEager, 0, 0};
  std::byte* p = slot->data();
  std::memcpy(p, &f, sizeof(f));
  wire::EncodeHeaderInto(m, p + sizeof(f));
  size_t off = sizeof(f) + header_size;
  for (size_t i = 0; i < m.segments.size(); ++i) {
    const Buffer& s = m.segments[i];
    if (s.size()) std::memcpy(p + off, s.data(), s.size());
    // Small values are cheaper to copy than to register; the copy is
    // counted so the zero-copy promise stays measurable.
    if (IsValuesSegment(m, i)) stats_.bytes_copied.fetch_add(s.size(), std::memory_order_relaxed);
    off += s.size();
  }
  ibv_sge sge{reinterpret_cast<uintptr_t>(p), static_cast<uint32_t>(total), slot->region()->lkey};
  ibv_send_wr wr{};
  wr.sg_list = &sge;
  wr.num_sge = 1;
  wr.opcode = IBV_WR_SEND;
  if (total <= max_inline_) wr.send_flags |= IBV_SEND_INLINE;
  return PostSendLocked(c, &wr, 1, {std::move(*slot)}, false);
}

absl::Status RdmaTransport::PostControlLocked(Conn& c, Buffer frame) {
  auto slot = SendSlot(frame.size());
  if (!slot.ok()) return slot.status();
  std::memcpy(slot->data(), frame.data(), frame.size());
  ibv_sge sge{reinterpret_cast<uintptr_t>(slot->data()), static_cast<uint32_t>(frame.size()),
              slot->region()->lkey};
  ibv_send_wr wr{};
  wr.sg_list = &sge;
  wr.num_sge = 1;
  wr.opcode = IBV_WR_SEND;
  if (frame.size() <= max_inline_) wr.send_flags |= IBV_SEND_INLINE;
  return PostSendLocked(c, &wr, 1, {std::move(*slot)}, false);
}

absl::Status RdmaTransport::PostRtsLocked(Conn& c, const Message& m) {
  auto job = std::make_shared<WriteJob>();
  job->msg = m;
  // Register the sources now: a failure (memlock, limit) falls back to a
  // registered copy, counted, rather than failing the send.
  for (size_t i = 0; i < job->msg.segments.size(); ++i) {
    Buffer& s = job->msg.segments[i];
    if (s.empty()) continue;
    auto r = rdma::EnsureRegistered(device_, s);
    if (r.ok()) continue;
    auto copy = pool_->Get(s.size());
    if (!copy.ok()) return copy.status();
    std::memcpy(copy->data(), s.data(), s.size());
    if (IsValuesSegment(m, i)) stats_.bytes_copied.fetch_add(s.size());
    s = std::move(*copy);
  }
  Buffer header = wire::EncodeHeader(m);
  uint64_t id;
  {
    std::lock_guard<std::mutex> lock(rdv_mu_);
    id = next_send_id_++;
    pending_sends_[id] = job;
  }
  Buffer frame = Buffer::Allocate(sizeof(Frame) + header.size());
  Frame f{kRts, 0, id};
  std::memcpy(frame.data(), &f, sizeof(f));
  std::memcpy(frame.data() + sizeof(f), header.data(), header.size());
  return PostControlLocked(c, std::move(frame));
}

absl::Status RdmaTransport::PostWritesLocked(Conn& c, WriteJob& job) {
  const auto& segs = job.msg.segments;
  std::vector<ibv_sge> sges(segs.size());
  std::vector<ibv_send_wr> wrs(segs.size() + 1);
  int n = 0;
  for (size_t i = 0; i < segs.size(); ++i) {
    if (segs[i].empty()) continue;
    sges[i] = {reinterpret_cast<uintptr_t>(segs[i].data()), static_cast<uint32_t>(segs[i].size()),
               segs[i].region()->lkey};
    ibv_send_wr& wr = wrs[n++];
    wr = {};
    wr.sg_list = &sges[i];
    wr.num_sge = 1;
    wr.opcode = IBV_WR_RDMA_WRITE;
    wr.wr.rdma.remote_addr = job.targets[i].addr;
    wr.wr.rdma.rkey = job.targets[i].rkey;
  }
  // The immediate completes the message at the receiver; RC delivers it
  // after every write before it.
  uint32_t token = job.targets.empty() ? 0 : job.targets[0].token;
  if (n > 0) {
    wrs[n - 1].opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
    wrs[n - 1].imm_data = htonl(token);
  } else {
    ibv_send_wr& wr = wrs[n++];
    wr = {};
    wr.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
    wr.imm_data = htonl(token);
  }
  for (int i = 0; i + 1 < n; ++i) wrs[i].next = &wrs[i + 1];
  std::vector<Buffer> keep(segs.begin(), segs.end());
  return PostSendLocked(c, wrs.data(), n, std::move(keep), /*force_signal=*/true);
}

absl::Status RdmaTransport::PostSendLocked(Conn& c, ibv_send_wr* wr, int wrs,
                                           std::vector<Buffer> keep, bool force_signal) {
  // Selective signalling: one completion per signal_every requests, and
  // always for the last write of a rendezvous, whose sources are the
  // caller's buffers.
  ibv_send_wr* last = wr;
  for (int i = 1; i < wrs; ++i) last = last->next;
  for (ibv_send_wr* w = wr; w != nullptr; w = w->next) w->wr_id = ++c.next_seq;
  c.unsignaled += wrs;
  if (force_signal || c.unsignaled >= options_.signal_every ||
      c.sq_used + wrs >= options_.send_depth - 1) {
    last->send_flags |= IBV_SEND_SIGNALED;
    c.unsignaled = 0;
  }
  ibv_send_wr* bad = nullptr;
  if (ibv_post_send(c.id->qp, wr, &bad) != 0) {
    return absl::UnavailableError(
        absl::StrFormat("rdma: ibv_post_send failed: %s", std::strerror(errno)));
  }
  for (ibv_send_wr* w = wr; w != nullptr; w = w->next) {
    c.held.emplace_back(w->wr_id, w == last ? std::move(keep) : std::vector<Buffer>());
  }
  c.sq_used += wrs;
  return absl::OkStatus();
}

}  // namespace geops
