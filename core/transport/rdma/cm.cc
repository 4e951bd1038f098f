// Connection management of the rdma transport: the device, listening,
// connecting with retries until a deadline, accepting (only connections
// that carry the tier's secret), and every rdma_cm event, on the
// transport's cm thread. A failure never aborts: it marks the connection
// down with a message that Send and PeerProblem return.
#include <arpa/inet.h>
#include <poll.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "core/base/log.h"
#include "core/transport/rdma/rdma_transport.h"

namespace geops {
namespace {

constexpr int kResolveTimeoutMs = 2000;

// How long a sender waits before it retries a SEND that found this side's
// shared receive queue empty (an RNR NAK), in the IB encoding: 12 = 0.64 ms
// (the value NCCL uses). rdma_cm leaves it at 0, which IB reads as 655 ms:
// a receiver that falls a few slots behind once stalled its sender for
// 0.65 s per message, and a busy cluster crawled.
constexpr uint8_t kMinRnrTimer = 12;

absl::Status Errno(const std::string& what) {
  return absl::UnavailableError(absl::StrFormat("rdma: %s: %s", what, std::strerror(errno)));
}

rdma_conn_param ConnParam() {
  rdma_conn_param param{};
  param.rnr_retry_count = 7;  // 7: retry forever while the peer's slots are busy
  param.retry_count = 7;
  param.responder_resources = 1;
  param.initiator_depth = 1;
  return param;
}

}  // namespace

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
  device_->registrations = &stats_.registrations;
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
  srq_.reset(ibv_create_srq(device_->pd, &sa));
  if (!srq_) return Errno("ibv_create_srq");
  options_.srq_depth = static_cast<int>(sa.attr.max_wr);
  options_.send_depth = std::min(options_.send_depth, attr.max_qp_wr);
  device_->limit_bytes = options_.rdma_mem_limit;
  pool_ = std::make_unique<rdma::RegisteredPool>(device_);
  if (auto s = progress_.Start(cq_.get(), comp_channel_.get(),
                               std::make_unique<rdma::ReceiveSlots>(
                                   srq_.get(), pool_.get(), device_.get(),
                                   options_.rdma_slot_bytes, options_.srq_depth));
      !s.ok()) {
    return s;
  }
  log::Verbose(1, "rdma: device %s ready (srq %d slots of %d bytes)",
               ibv_get_device_name(verbs->device), options_.srq_depth, options_.rdma_slot_bytes);
  return absl::OkStatus();
}

absl::StatusOr<int> RdmaTransport::Listen(const std::string& host, int port) {
  auto addr = rdma::Resolve(host, port);
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

void RdmaTransport::StartConnect(Conn& c) {
  auto dst = rdma::Resolve(c.host, c.port);
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
    absl::MutexLock lock(&c.mu);
    c.id.reset(raw);
    c.state = Conn::State::kConnecting;
    ++c.attempts;
  }
  // Leave from our listening address so that the peer sees the device we
  // registered with, not whatever the routing table prefers.
  sockaddr* src = listening_ ? reinterpret_cast<sockaddr*>(&bound_) : nullptr;
  if (rdma_resolve_addr(raw, src, reinterpret_cast<sockaddr*>(&*dst), kResolveTimeoutMs) != 0) {
    RetryOrFail(c, absl::StrFormat("rdma_resolve_addr: %s", std::strerror(errno)));
  }
}

void RdmaTransport::RetryOrFail(Conn& c, const std::string& why) {
  absl::Time now = absl::Now();
  int attempts;
  {
    absl::MutexLock lock(&c.mu);
    attempts = c.attempts;
  }
  if (now >= c.deadline || stopping_.load()) {
    FailConn(c, absl::StrFormat(
                    "cannot connect to node %d at %s:%d after %d attempts: %s (is it running and "
                    "listening on an RDMA device? are the addresses right?)",
                    c.peer, c.host, c.port, attempts, why));
    return;
  }
  log::Verbose(1, "rdma: connect to node %d at %s:%d failed (%s); retrying", c.peer, c.host,
               c.port, why);
  absl::Duration backoff = std::min(absl::Milliseconds(100) * (1 << std::min(attempts, 4)),
                                    absl::Seconds(1));
  absl::MutexLock lock(&c.mu);
  c.retry_at = now + backoff;
}

void RdmaTransport::FailConn(Conn& c, const std::string& why) {
  std::deque<Outgoing> dropped;
  {
    absl::MutexLock lock(&c.mu);
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
  qa.srq = srq_.get();
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
  max_inline_.store(qa.cap.max_inline_data);
  conns_.IndexQp(c.id->qp->qp_num, &c);
  return absl::OkStatus();
}

void RdmaTransport::CmLoop() {
  while (!stopping_.load()) {
    pollfd p{events_->fd, POLLIN, 0};
    if (poll(&p, 1, 100) > 0) {
      rdma_cm_event* ev = nullptr;
      if (rdma_get_cm_event(events_.get(), &ev) == 0) HandleCmEvent(ev);
    }
    StartDueRetries();
  }
}

void RdmaTransport::StartDueRetries() {
  std::vector<std::shared_ptr<Conn>> due;
  absl::Time now = absl::Now();
  for (auto& c : conns_.All()) {
    absl::MutexLock cl(&c->mu);
    if (c->retry_at <= now) {
      c->retry_at = absl::InfiniteFuture();
      due.push_back(c);
    }
  }
  for (auto& c : due) {
    rdma::CmIdPtr old;
    // Only the cm thread replaces an id, so reading it here needs no lock.
    if (c->id && c->id->qp) conns_.UnindexQp(c->id->qp->qp_num);
    {
      absl::MutexLock lock(&c->mu);
      old = std::move(c->id);
    }
    old.reset();  // every event of the old id has been acknowledged
    StartConnect(*c);
  }
}

void RdmaTransport::OnConnectRequest(rdma_cm_event* ev) {
  rdma_cm_id* id = ev->id;
  // The private data lives in the event: check it before the ack frees it.
  bool admitted = rdma::SecretMatches(ev->param.conn.private_data,
                                      ev->param.conn.private_data_len, options_.rdma_secret);
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
    std::string refusal = rdma::SecretRefusal();
    rdma_reject(id, refusal.data(), static_cast<uint8_t>(refusal.size()));
    rdma_destroy_id(id);
    return;
  }
  auto in = std::make_shared<Conn>();
  in->id.reset(id);
  id->context = in.get();
  absl::Status s = InitDevice(id->verbs);
  if (s.ok()) s = CreateQp(*in);
  rdma_conn_param param = ConnParam();
  if (s.ok() && rdma_accept(id, &param) != 0) s = Errno("rdma_accept");
  if (!s.ok()) {
    log::Warn("rdma: refused an incoming connection: %s", s.message());
    rdma_reject(id, nullptr, 0);
    if (id->qp) conns_.UnindexQp(id->qp->qp_num);
  }
  conns_.Add(std::move(in));
}

void RdmaTransport::HandleCmEvent(rdma_cm_event* ev) {
  rdma_cm_event_type type = ev->event;
  rdma_cm_id* id = ev->id;
  auto* c = static_cast<Conn*>(id->context);
  int status = ev->status;
  log::Verbose(2, "rdma: cm event %s (status %d)", rdma_event_str(type), status);

  if (type == RDMA_CM_EVENT_CONNECT_REQUEST) {
    OnConnectRequest(ev);
    return;
  }
  const bool refused_secret =
      type == RDMA_CM_EVENT_REJECTED &&
      rdma::RefusedForSecret(ev->param.conn.private_data, ev->param.conn.private_data_len);
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
      rdma_conn_param param = ConnParam();
      std::string pdata = rdma::ConnectPrivateData(options_.rdma_secret);
      param.private_data = pdata.data();
      param.private_data_len = static_cast<uint8_t>(pdata.size());
      if (s.ok() && rdma_connect(id, &param) != 0) s = Errno("rdma_connect");
      if (!s.ok()) FailConn(*c, std::string(s.message()));
      break;
    }
    case RDMA_CM_EVENT_ESTABLISHED: {
      // Allowed in RTS (an optional attribute of RTS->RTS on RC).
      ibv_qp_attr attr{};
      attr.min_rnr_timer = kMinRnrTimer;
      if (id->qp != nullptr && ibv_modify_qp(id->qp, &attr, IBV_QP_MIN_RNR_TIMER) != 0) {
        log::Warn("rdma: cannot shorten the RNR retry delay (ibv_modify_qp: %s); a receiver "
                  "short of slots will stall its senders 655 ms at a time",
                  std::strerror(errno));
      }
      absl::MutexLock lock(&c->mu);
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
        RetryOrFail(*c, absl::StrFormat("%s (status %d)", rdma_event_str(type), status));
      } else {
        FailConn(*c, absl::StrFormat("incoming connection: %s", rdma_event_str(type)));
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

}  // namespace geops
