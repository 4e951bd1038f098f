#include "core/transport/tcp_transport.h"

#include <malloc.h>
#include <zmq.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "core/base/log.h"
#include "core/wire/codec.h"

namespace geops {
namespace {

absl::Status ZmqError(const std::string& what) {
  return absl::UnavailableError(absl::StrFormat("%s: %s", what, zmq_strerror(zmq_errno())));
}

// ZeroMQ calls this from its I/O thread once a frame has left; dropping the
// Buffer reference it carried is what returns the memory to its owner.
void ReleaseBuffer(void* /*data*/, void* hint) { delete static_cast<Buffer*>(hint); }

int SetInt(void* socket, int option, int value) {
  return zmq_setsockopt(socket, option, &value, sizeof(value));
}

// A received frame and the counter of lent bytes it belongs to, in one
// allocation: the release below then captures a single pointer, which
// std::function stores inline (no second allocation per frame).
struct LentFrame {
  zmq_msg_t msg;
  std::shared_ptr<std::atomic<int64_t>> lent;
};

// A received frame, owned by its LentFrame for as long as the Buffer lives.
Buffer AdoptFrame(LentFrame* frame) {
  void* data = zmq_msg_data(&frame->msg);
  size_t size = zmq_msg_size(&frame->msg);
  frame->lent->fetch_add(static_cast<int64_t>(size), std::memory_order_relaxed);
  return Buffer::Wrap(data, size, [frame] {
    frame->lent->fetch_sub(static_cast<int64_t>(zmq_msg_size(&frame->msg)),
                           std::memory_order_relaxed);
    zmq_msg_close(&frame->msg);
    delete frame;
  });
}

// FNV-1a of a routing id: a stable per-connection token for Message::origin.
uint64_t OriginOf(const zmq_msg_t* identity) {
  const auto* p = static_cast<const uint8_t*>(zmq_msg_data(const_cast<zmq_msg_t*>(identity)));
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < zmq_msg_size(const_cast<zmq_msg_t*>(identity)); ++i) {
    h = (h ^ p[i]) * 1099511628211ull;
  }
  return h | 1;  // never 0, which means "unknown"
}

// 16 random bytes (the first non-zero: ZeroMQ reserves ids that start with 0).
std::string RandomRoutingId() {
  std::string id(16, '\0');
  std::random_device rd;
  for (auto& c : id) c = static_cast<char>(rd());
  if (id[0] == 0) id[0] = 1;
  return id;
}

// ZeroMQ stages every large received frame in a block of its own from
// malloc; we move the value out and free the block at once (see Settle).
// With the C library's defaults that free is where the faults come from:
// two free 4 MiB blocks at the top of ZeroMQ's thread arena exceed the
// dynamic trim threshold, the arena hands the pages back (MADV_DONTNEED),
// and the next frame faults them in again, zero-filled, 256 times per MiB.
// So, once per process, blocks up to 32 MiB (the largest mmap threshold
// the C library allows) come from the arenas, and free memory at their top
// is kept up to 256 MiB. A user who tunes malloc through GLIBC_TUNABLES
// keeps their settings.
void KeepStagingMemoryWarm() {
  static std::once_flag once;
  std::call_once(once, [] {
    const char* tunables = std::getenv("GLIBC_TUNABLES");
    if (tunables != nullptr && std::strstr(tunables, "glibc.malloc.") != nullptr) return;
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
  });
}

// One frame, never blocking: -1 with zmq_errno() set when refused.
int SendFrame(void* sock, zmq_msg_t* frame, int flags) {
  int rc;
  do {
    rc = zmq_msg_send(frame, sock, flags | ZMQ_DONTWAIT);
  } while (rc < 0 && zmq_errno() == EINTR);
  return rc;
}

// A DEALER keeps its queue across reconnects, but drops it when a
// handshake fails (another key, or none): it then has nowhere to queue
// until a handshake succeeds. A blocking send would wait for ever (a
// start-up hung so, once in fifteen runs); give the connection a moment
// to come back, then let the caller fail with what the handshake said.
int SendFirstFrame(void* sock, zmq_msg_t* frame, int flags, const std::atomic<bool>& shutdown) {
  constexpr absl::Duration kSendWait = absl::Seconds(1);
  const absl::Time give_up = absl::Now() + kSendWait;
  for (;;) {
    int rc = SendFrame(sock, frame, flags);
    if (rc >= 0 || zmq_errno() != EAGAIN) return rc;
    if (shutdown.load() || absl::Now() >= give_up) {
      errno = EAGAIN;
      return -1;
    }
    zmq_pollitem_t item{sock, 0, ZMQ_POLLOUT, 0};
    zmq_poll(&item, 1, 10);
  }
}

}  // namespace

void TcpTransport::ContextDeleter::operator()(void* ctx) const { zmq_ctx_term(ctx); }
void TcpTransport::SocketDeleter::operator()(void* sock) const {
  // Stop a socket monitor first: closing a watched socket emits events
  // (DISCONNECTED, with the endpoint in a heap message) that libzmq leaks
  // when nobody reads them any more. A no-op on unwatched sockets.
  zmq_socket_monitor(sock, nullptr, 0);
  zmq_close(sock);
}

TcpTransport::TcpTransport(size_t max_message_bytes)
    : max_message_bytes_(max_message_bytes),
      context_(zmq_ctx_new()),
      watch_(std::make_unique<TcpWatch>(context_.get(), false, false)) {
  KeepStagingMemoryWarm();
  // Pending frames hold application Buffers; let teardown flush them briefly
  // rather than drop the final EXIT of an orderly shutdown.
  zmq_ctx_set(context_.get(), ZMQ_MAX_SOCKETS, 65536);
}

absl::StatusOr<std::unique_ptr<TcpTransport>> TcpTransport::Create(
    size_t max_message_bytes, std::optional<CurveKeys> curve, bool watch_disconnects,
    bool stage_received) {
  auto t = std::make_unique<TcpTransport>(max_message_bytes);
  t->stage_received_ = stage_received;
  if (curve) {
    auto zap = ZapHandler::Start(t->context_.get(), *curve);
    if (!zap.ok()) return zap.status();
    t->zap_ = std::move(*zap);
    t->curve_ = std::move(curve);
  }
  t->watch_ = std::make_unique<TcpWatch>(t->context_.get(), t->curve_.has_value(), watch_disconnects);
  return t;
}

void TcpTransport::SecureLocked(void* sock, bool server) {
  if (!curve_) return;
  const CurveKeys& k = *curve_;
  if (server) {
    SetInt(sock, ZMQ_CURVE_SERVER, 1);
    zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, k.secret_key.c_str(), 41);
    // A domain makes ZeroMQ consult our ZAP handler for every client.
    zmq_setsockopt(sock, ZMQ_ZAP_DOMAIN, "geops", 5);
  } else {
    zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, k.public_key.c_str(), 41);
    zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, k.public_key.c_str(), 41);
    zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, k.secret_key.c_str(), 41);
  }
}

uint64_t TcpTransport::Disconnects(int peer_id) const {
  std::shared_lock lock(peers_mu_);
  auto it = peers_.find(peer_id);
  return it == peers_.end() ? 0 : it->second->disconnects->load();
}

std::string TcpTransport::PeerProblem(int peer_id) const { return watch_->Problem(peer_id); }

TcpTransport::~TcpTransport() {
  Shutdown();
  std::unique_lock lock(peers_mu_);
  // A peer that refused our handshake will never take what is queued for
  // it: drop that at once instead of lingering over it.
  for (const auto& [id, peer] : peers_) {
    if (peer->socket && !watch_->Problem(id).empty()) SetInt(peer->socket.get(), ZMQ_LINGER, 0);
  }
  peers_.clear();
  receiver_.reset();
}

absl::StatusOr<int> TcpTransport::Listen(const std::string& host, int port) {
  SocketPtr sock(zmq_socket(context_.get(), ZMQ_ROUTER));
  if (!sock) return ZmqError("zmq_socket(ROUTER)");
  SetInt(sock.get(), ZMQ_RCVHWM, 0);
  SetInt(sock.get(), ZMQ_LINGER, 0);
  // Checked per frame against the announced length, before ZeroMQ
  // allocates it: a peer cannot make us hold more than this per connection.
  int64_t max_frame = static_cast<int64_t>(max_message_bytes_);
  zmq_setsockopt(sock.get(), ZMQ_MAXMSGSIZE, &max_frame, sizeof(max_frame));
  SecureLocked(sock.get(), /*server=*/true);
  watch_->Add(sock.get(), -1, nullptr, nullptr);
  std::string endpoint = absl::StrFormat("tcp://%s:%s", host, port == 0 ? "*" : std::to_string(port));
  if (port == 0) endpoint = absl::StrFormat("tcp://%s:*", host);
  if (zmq_bind(sock.get(), endpoint.c_str()) != 0) {
    int err = zmq_errno();
    if (err == EADDRINUSE) {
      return absl::UnavailableError(absl::StrFormat(
          "cannot listen on %s:%d: the port is already in use (another geops or a stale "
          "process?)", host, port));
    }
    return absl::UnavailableError(absl::StrFormat(
        "cannot listen on %s:%d: %s (is %s an address of this host? see DMLC_NODE_HOST)", host,
        port, zmq_strerror(err), host));
  }
  char last[256];
  size_t len = sizeof(last);
  zmq_getsockopt(sock.get(), ZMQ_LAST_ENDPOINT, last, &len);
  std::string bound(last);
  int bound_port = std::stoi(bound.substr(bound.rfind(':') + 1));
  receiver_ = std::move(sock);
  if (host != "0.0.0.0" && host != "*") listen_host_ = host;
  log::Verbose(1, "tcp: listening on %s:%d", host, bound_port);
  return bound_port;
}

absl::Status TcpTransport::Connect(int peer_id, const std::string& host, int port) {
  SocketPtr sock(zmq_socket(context_.get(), ZMQ_DEALER));
  if (!sock) return ZmqError("zmq_socket(DEALER)");
  SetInt(sock.get(), ZMQ_SNDHWM, 0);
  SetInt(sock.get(), ZMQ_LINGER, 2000);
  SetInt(sock.get(), ZMQ_RECONNECT_IVL, 100);
  SetInt(sock.get(), ZMQ_RECONNECT_IVL_MAX, 1000);
  SetInt(sock.get(), ZMQ_TCP_KEEPALIVE, 1);
  std::string routing_id = RandomRoutingId();
  zmq_setsockopt(sock.get(), ZMQ_ROUTING_ID, routing_id.data(), routing_id.size());
  SecureLocked(sock.get(), /*server=*/false);
  auto peer = std::make_shared<Peer>();
  // Held until the socket is in place: the receive thread may see the
  // handshake succeed and stop the monitor before zmq_connect returns.
  std::unique_lock<std::mutex> building(peer->mu);
  // The socket belongs to whoever sends on it: its monitor is stopped
  // under the same lock (ZeroMQ lets a socket change threads across a full
  // barrier); a socket already replaced or closed has stopped its own.
  watch_->Add(sock.get(), peer_id, peer->disconnects,
              [weak = std::weak_ptr<Peer>(peer)] {
                if (auto p = weak.lock()) {
                  std::lock_guard<std::mutex> lock(p->mu);
                  if (p->socket) zmq_socket_monitor(p->socket.get(), nullptr, 0);
                }
              });
  // Leave from the address we listen on (ZeroMQ's "source;destination"
  // form): a peer then sees traffic come from the node it knows, and a host
  // with several addresses per party (the WAN lab) routes and shapes it as
  // that party's, instead of letting the kernel pick the destination's own.
  std::string endpoint = absl::StrFormat("tcp://%s:%d", host, port);
  std::string dialed = listen_host_.empty() ? endpoint
                                            : absl::StrFormat("tcp://%s:0;%s:%d", listen_host_,
                                                              host, port);
  if (zmq_connect(sock.get(), dialed.c_str()) != 0) {
    return ZmqError("connect to " + endpoint);
  }
  peer->socket = std::move(sock);
  building.unlock();
  std::unique_lock lock(peers_mu_);
  peers_[peer_id] = std::move(peer);
  log::Verbose(1, "tcp: connected to node %d at %s", peer_id, endpoint);
  return absl::OkStatus();
}

absl::Status TcpTransport::Alias(int new_id, int existing_id) {
  std::unique_lock lock(peers_mu_);
  auto it = peers_.find(existing_id);
  if (it == peers_.end()) {
    return absl::NotFoundError(absl::StrFormat("no connection to node %d", existing_id));
  }
  peers_[new_id] = it->second;
  return absl::OkStatus();
}

absl::Status TcpTransport::Send(const Message& msg) {
  for (const auto& s : msg.segments) {
    if (s.size() > max_message_bytes_) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "a %d-byte segment to node %d exceeds GEOPS_MAX_MESSAGE_MB (%d MiB), which every "
          "receiver enforces: raise it on every node, or use smaller keys",
          s.size(), msg.header.recipient, max_message_bytes_ >> 20));
    }
  }
  std::shared_ptr<Peer> peer;
  {
    std::shared_lock lock(peers_mu_);
    auto it = peers_.find(msg.header.recipient);
    if (it == peers_.end()) {
      return absl::NotFoundError(
          absl::StrFormat("no connection to node %d", msg.header.recipient));
    }
    peer = it->second;
  }
  Buffer header = wire::EncodeHeader(msg);
  std::vector<const Buffer*> frames;
  frames.reserve(msg.segments.size() + 1);
  frames.push_back(&header);
  for (const auto& s : msg.segments) frames.push_back(&s);

  std::lock_guard<std::mutex> lock(peer->mu);
  for (size_t i = 0; i < frames.size(); ++i) {
    zmq_msg_t frame;
    const Buffer& b = *frames[i];
    if (b.empty()) {
      zmq_msg_init(&frame);
    } else {
      zmq_msg_init_data(&frame, b.data(), b.size(), ReleaseBuffer, new Buffer(b));
    }
    int more = i + 1 < frames.size() ? ZMQ_SNDMORE : 0;
    // Never a blocking send: once its first part is taken ZeroMQ takes the
    // rest of a message, and the first is refused only when the socket has
    // no connection to queue on (the send high-water mark is unlimited).
    const int rc = i == 0 ? SendFirstFrame(peer->socket.get(), &frame, more, shutdown_)
                          : SendFrame(peer->socket.get(), &frame, more);
    if (rc < 0) {
      const int err = zmq_errno();
      zmq_msg_close(&frame);
      // A multipart message is atomic in ZeroMQ: the parts queued so far are
      // discarded with the socket's pending message, so nothing half-sent
      // reaches the peer.
      if (err == EAGAIN) {
        std::string problem = PeerProblem(msg.header.recipient);
        return absl::UnavailableError(absl::StrFormat(
            "send to node %d: no connection to it can carry messages%s", msg.header.recipient,
            problem.empty() ? " (it refused or closed ours)" : absl::StrCat(": ", problem)));
      }
      return absl::UnavailableError(absl::StrFormat("send to node %d: %s", msg.header.recipient,
                                                    zmq_strerror(err)));
    }
  }
  stats_.messages_sent.fetch_add(1, std::memory_order_relaxed);
  stats_.bytes_sent.fetch_add(header.size() + msg.payload_bytes(), std::memory_order_relaxed);
  return absl::OkStatus();
}

void TcpTransport::Drain() {
  int more = 1;
  size_t len = sizeof(more);
  while (zmq_getsockopt(receiver_.get(), ZMQ_RCVMORE, &more, &len) == 0 && more) {
    zmq_msg_t f;
    zmq_msg_init(&f);
    zmq_msg_recv(&f, receiver_.get(), 0);
    zmq_msg_close(&f);
  }
}

absl::StatusOr<Message> TcpTransport::ReadMessage() {
  // Frame 0 (the sender's routing identity) is already consumed.
  std::vector<Buffer> frames;
  size_t bytes = 0;
  for (;;) {
    int more = 0;
    size_t len = sizeof(more);
    zmq_getsockopt(receiver_.get(), ZMQ_RCVMORE, &more, &len);
    if (!more) break;
    if (frames.size() > wire::kMaxSegments + 1) {
      Drain();
      return absl::DataLossError("malformed message: too many frames");
    }
    auto* frame = new LentFrame{{}, lent_};
    zmq_msg_init(&frame->msg);
    if (zmq_msg_recv(&frame->msg, receiver_.get(), 0) < 0) {
      zmq_msg_close(&frame->msg);
      delete frame;
      return ZmqError("receive");
    }
    bytes += zmq_msg_size(&frame->msg);
    frames.push_back(AdoptFrame(frame));
  }
  stats_.bytes_received.fetch_add(bytes, std::memory_order_relaxed);
  if (frames.empty()) return absl::DataLossError("malformed message: no header frame");
  Buffer header = std::move(frames.front());
  frames.erase(frames.begin());
  auto msg = wire::Decode({header.data(), header.size()}, std::move(frames));
  if (msg.ok()) Settle(*msg);
  return msg;
}

bool TcpTransport::ExpectInto(int peer_id, int timestamp, std::vector<Buffer> targets) {
  // Bounded: a request whose answer never comes (its server died) must not
  // pin its destinations for ever.
  constexpr size_t kMaxExpected = 1 << 16;
  std::lock_guard<std::mutex> lock(expect_mu_);
  const std::pair<int, int> where{peer_id, timestamp};
  if (auto old = expected_.find(where); old != expected_.end()) {
    expect_order_.erase(old->second.seq);
  }
  const uint64_t seq = ++expect_seq_;
  expected_[where] = Expected{seq, std::move(targets)};
  expect_order_[seq] = where;
  while (expected_.size() > kMaxExpected) {
    expected_.erase(expect_order_.begin()->second);
    expect_order_.erase(expect_order_.begin());
  }
  expected_count_.store(expected_.size(), std::memory_order_release);
  return true;
}

void TcpTransport::Settle(Message& msg) {
  std::vector<Buffer> targets;
  // A server never announces: its receive thread skips the lock. The
  // announcement happens before the request is sent, so before its answer
  // arrives.
  if (expected_count_.load(std::memory_order_acquire) != 0) {
    std::lock_guard<std::mutex> lock(expect_mu_);
    auto it = expected_.find({msg.header.sender, msg.header.timestamp});
    if (it != expected_.end()) {
      targets = std::move(it->second.targets);
      expect_order_.erase(it->second.seq);
      expected_.erase(it);
      expected_count_.store(expected_.size(), std::memory_order_release);
    }
  }
  uint64_t copied = 0;
  for (size_t i = 1; i < msg.segments.size(); ++i) {
    Buffer& seg = msg.segments[i];
    if (seg.size() < kMoveFrameBytes) continue;
    const bool placed = i < targets.size() && targets[i].size() == seg.size();
    if (!placed && !stage_received_) continue;
    Buffer to = placed ? targets[i] : pool_.Get(seg.size());
    std::memcpy(to.data(), seg.data(), seg.size());
    copied += seg.size();
    seg = std::move(to);  // the ZeroMQ frame is freed here, still warm
  }
  if (copied) stats_.bytes_staged.fetch_add(copied, std::memory_order_relaxed);
}

absl::StatusOr<Message> TcpTransport::Receive(absl::Duration timeout) {
  if (!receiver_) return absl::FailedPreconditionError("Receive() before Listen()");
  absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    if (shutdown_.load()) return absl::CancelledError("transport shut down");
    // Poll in short slices so that Shutdown() from another thread is seen
    // promptly without touching this thread's socket.
    absl::Duration left = deadline - absl::Now();
    long slice_ms = std::clamp<long>(absl::ToInt64Milliseconds(left), 0, 50);
    zmq_pollitem_t item{receiver_.get(), 0, ZMQ_POLLIN, 0};
    int rc;
    if (watch_->empty()) {
      rc = zmq_poll(&item, 1, slice_ms);
    } else {
      // Connection events share the wait with messages.
      auto in = watch_->Poll(receiver_.get(), slice_ms);
      if (!in.ok()) return in.status();
      rc = *in ? 1 : 0;
      item.revents = *in ? ZMQ_POLLIN : 0;
    }
    if (rc < 0) {
      if (zmq_errno() == EINTR) continue;
      return ZmqError("poll");
    }
    if (!(item.revents & ZMQ_POLLIN)) {
      if (absl::Now() >= deadline) return absl::DeadlineExceededError("no message");
      continue;
    }
    zmq_msg_t identity;
    zmq_msg_init(&identity);
    int got = zmq_msg_recv(&identity, receiver_.get(), ZMQ_DONTWAIT);
    uint64_t origin = got < 0 ? 0 : OriginOf(&identity);
    zmq_msg_close(&identity);
    if (got < 0) continue;
    auto msg = ReadMessage();
    if (!msg.ok()) {
      if (absl::IsDataLoss(msg.status())) {
        stats_.malformed.fetch_add(1, std::memory_order_relaxed);
        log::Warn("tcp: dropped a message (%d dropped so far): %s", stats_.malformed.load(),
                  msg.status().message());
        continue;
      }
      return msg.status();
    }
    stats_.messages_received.fetch_add(1, std::memory_order_relaxed);
    msg->origin = origin;
    return msg;
  }
}

void TcpTransport::Shutdown() { shutdown_.store(true); }

}  // namespace geops
