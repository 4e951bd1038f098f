// The rdma transport's Transport calls: construction and teardown, the
// connection table's calls (Connect, Alias, PeerProblem), Send (which picks
// a path: post.cc) and Receive (which polls while it spins: progress.h).
#include "core/transport/rdma/rdma_transport.h"

#include <cerrno>
#include <cstring>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "core/base/log.h"
#include "core/wire/codec.h"

namespace geops {
namespace {

absl::Status Errno(const std::string& what) {
  return absl::UnavailableError(absl::StrFormat("rdma: %s: %s", what, std::strerror(errno)));
}

}  // namespace

namespace rdma {

absl::Status ProbeDevice() {
  int n = 0;
  ibv_device** list = ibv_get_device_list(&n);
  if (list) ibv_free_device_list(list);
  if (n > 0) return absl::OkStatus();
  return absl::FailedPreconditionError(
      "rdma: no RDMA device on this machine (ibv_get_device_list found none): load a driver "
      "or SoftRoCE (deploy/softroce/softroce.sh up <netdev>), pass /dev/infiniband to the "
      "container, or unset DMLC_PS_VAN_TYPE / DMLC_ENABLE_RDMA to use TCP");
}

}  // namespace rdma

absl::StatusOr<std::unique_ptr<Transport>> MakeRdmaTransport(const RdmaOptions& options) {
  auto t = RdmaTransport::Create(options);
  if (!t.ok()) return t.status();
  return std::unique_ptr<Transport>(std::move(*t));
}

absl::StatusOr<std::unique_ptr<RdmaTransport>> RdmaTransport::Create(RdmaOptions options) {
  if (auto s = rdma::ProbeDevice(); !s.ok()) return s;
#ifdef NDEBUG
  // An abseil built without NDEBUG (Debian's is) checks every Mutex
  // acquisition against a process-wide lock graph, behind one global lock:
  // on this path that is a shared lock per completion and per message.
  // Release builds of geops rely on the compiler's check of the lock
  // annotations (clang -Wthread-safety) instead; debug builds keep it.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
#endif
  std::unique_ptr<RdmaTransport> t(new RdmaTransport(std::move(options)));
  t->events_.reset(rdma_create_event_channel());
  if (!t->events_) return Errno("rdma_create_event_channel");
  t->cm_thread_ = std::thread([p = t.get()] { p->CmLoop(); });
  return t;
}

RdmaTransport::RdmaTransport(RdmaOptions options)
    : options_(std::move(options)),
      rdv_(options_.rdma_slot_bytes),
      progress_(options_.spin, this) {}

RdmaTransport::~RdmaTransport() {
  Shutdown();
  if (cm_thread_.joinable()) cm_thread_.join();
  progress_.Stop();  // joins the progress thread, drops the receive slots
  for (auto& c : conns_.All()) {
    absl::MutexLock cl(&c->mu);
    if (c->id && c->state == Conn::State::kUp) rdma_disconnect(c->id.get());
  }
  conns_.Clear();  // destroys QPs and ids
  rdv_.Clear();
  delivered_.Clear();
  listen_id_.reset();
  srq_.reset();
  cq_.reset();
  comp_channel_.reset();
  // Registrations still held by live Buffers keep the device, and so the
  // protection domain, alive; the last of them deallocates it.
  pool_.reset();
  if (device_) device_->registrations = nullptr;
  device_.reset();
  events_.reset();
}

void RdmaTransport::Shutdown() {
  stopping_.store(true);
  progress_.RequestStop();
  delivered_.WakeAll();
}

absl::Status RdmaTransport::Register(const Buffer& buf) {
  if (!device_) return absl::FailedPreconditionError("rdma: Register() before Listen()");
  auto r = rdma::EnsureRegistered(device_, buf);
  return r.ok() ? absl::OkStatus() : r.status();
}

bool RdmaTransport::ExpectInto(int peer_id, int timestamp, std::vector<Buffer> targets) {
  // A placed answer carries its first segment inside the frame that says
  // it is complete (frames.h); only the segments after it can be written
  // in place.
  if (targets.empty() || !targets[0].empty()) return false;
  targets.erase(targets.begin());
  rdv_.Expect(peer_id, timestamp, std::move(targets));
  return true;
}

std::string RdmaTransport::PeerProblem(int peer_id) const {
  Conn* c = conns_.Peer(peer_id);
  if (c == nullptr) return "";
  absl::MutexLock lock(&c->mu);
  return c->state == Conn::State::kDown ? c->error : "";
}

absl::Status RdmaTransport::Alias(int new_id, int existing_id) {
  return conns_.Alias(new_id, existing_id);
}

absl::Status RdmaTransport::Connect(int peer_id, const std::string& host, int port) {
  auto c = std::make_shared<Conn>();
  c->outgoing = true;
  c->peer = peer_id;
  c->host = host;
  c->port = port;
  c->deadline = absl::Now() + options_.connect_timeout;
  Conn* raw = c.get();
  if (!conns_.AddPeer(std::move(c))) return absl::OkStatus();  // already up or coming up
  StartConnect(*raw);
  return absl::OkStatus();
}

absl::Status RdmaTransport::Send(const Message& msg) {
  Conn* c = conns_.Peer(msg.header.recipient);
  if (c == nullptr) {
    return absl::NotFoundError(absl::StrFormat("no connection to node %d", msg.header.recipient));
  }
  rdma::Places places = rdv_.Plan(device_.get(), msg);
  absl::MutexLock lock(&c->mu);
  if (c->state == Conn::State::kDown) return absl::UnavailableError("rdma: " + c->error);
  stats_.messages_sent.fetch_add(1, std::memory_order_relaxed);
  stats_.bytes_sent.fetch_add(wire::EncodedHeaderSize(msg.segments.size()) + msg.payload_bytes(),
                              std::memory_order_relaxed);
  if (c->state == Conn::State::kUp && c->backlog.empty() &&
      c->sq_used + 1 <= options_.send_depth &&
      rdma::EagerFrameBytes(msg, places.adverts.size()) <= options_.rdma_slot_bytes) {
    // The common small message: straight onto the wire.
    return PostEagerLocked(*c, msg, places.adverts);
  }
  Outgoing out = OutMessage{msg, std::move(places.adverts), std::move(places.place)};
  if (c->state == Conn::State::kUp && c->backlog.empty()) {
    bool posted = false;
    if (auto s = PostLocked(*c, out, &posted); !s.ok()) return s;
    if (posted) return absl::OkStatus();
  }
  c->backlog.push_back(std::move(out));
  return absl::OkStatus();
}

absl::StatusOr<Message> RdmaTransport::Receive(absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  absl::Time spin_until = absl::Now() + options_.spin;
  // Counted in the gate from here until it blocks or returns.
  bool spinning = false;
  auto stop_spinning = [&](bool sleeping) {
    if (!spinning) return;
    spinning = false;
    progress_.gate().Leave(sleeping);
  };
  for (;;) {
    if (stopping_.load()) {
      stop_spinning(/*sleeping=*/true);
      return absl::CancelledError("transport shut down");
    }
    if (std::optional<Message> m = delivered_.TryPop()) {
      stop_spinning(/*sleeping=*/false);
      return std::move(*m);
    }
    absl::Time now = absl::Now();
    if (now >= deadline || !progress_.started() ||
        (now >= spin_until && !progress_.RecentlyBusy())) {
      stop_spinning(/*sleeping=*/true);
      if (now >= deadline) return absl::DeadlineExceededError("no message");
      // Nothing lately: block; the progress thread delivers.
      delivered_.Wait(std::min(deadline - now, absl::Milliseconds(100)), stopping_);
      spin_until = absl::Now() + options_.spin;
      continue;
    }
    if (!spinning) {
      spinning = true;
      progress_.gate().Enter();
    }
    // Poll a batch before looking at the queue and the clock again: both
    // cost more than an empty poll, which is a few loads.
    for (int i = 0; i < 64 && progress_.PollOnce() == 0; ++i) {
    }
  }
}

}  // namespace geops
