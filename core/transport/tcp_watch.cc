#include "core/transport/tcp_watch.h"

#include <zmq.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "core/base/log.h"

namespace geops {

struct TcpWatch::PollSet {
  std::vector<zmq_pollitem_t> items;   // the listener, then each monitor
  std::vector<const Monitor*> polled;  // the monitor of items[i + 1]
  std::vector<const Monitor*> ready;   // those with events in the last poll
  uint64_t seen = ~uint64_t{0};        // changed_ when items were built
};

void TcpWatch::PairCloser::operator()(void* sock) const { zmq_close(sock); }

TcpWatch::TcpWatch(void* context, bool curve, bool count_disconnects)
    : context_(context), curve_(curve), count_disconnects_(count_disconnects) {}

TcpWatch::~TcpWatch() = default;

void TcpWatch::Add(void* sock, int peer_id, Counter disconnects,
                   std::function<void()> stop_monitor) {
  int events = 0;
  // A dialling socket always watches its handshakes, CURVE or not: a
  // process without the tier's key that dials a CURVE peer learns of the
  // refusal at once (a mechanism mismatch) instead of waiting out its
  // connect timeout in silence. A plain listener has nothing to refuse.
  if (curve_ || peer_id >= 0) {
    events |= ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
              ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_SUCCEEDED;
  }
  const bool disconnects_too = count_disconnects_ && peer_id >= 0;
  if (disconnects_too) events |= ZMQ_EVENT_DISCONNECTED;
  if (events == 0) return;
  std::lock_guard<std::mutex> lock(mu_);
  std::string ep = absl::StrFormat("inproc://geops-monitor-%p-%d", static_cast<void*>(this), next_++);
  if (zmq_socket_monitor(sock, ep.c_str(), events) != 0) return;
  std::unique_ptr<void, PairCloser> pair(zmq_socket(context_, ZMQ_PAIR));
  if (!pair || zmq_connect(pair.get(), ep.c_str()) != 0) return;
  auto m = std::make_unique<Monitor>(Monitor{std::move(pair), peer_id, std::move(disconnects), {}});
  if (!curve_ && !disconnects_too) m->stop = std::move(stop_monitor);
  monitors_.push_back(std::move(m));
  count_.store(monitors_.size(), std::memory_order_release);
  changed_.fetch_add(1, std::memory_order_release);
}

absl::StatusOr<bool> TcpWatch::Poll(void* listener, long ms) {
  if (!poll_) poll_ = std::make_unique<PollSet>();
  PollSet& p = *poll_;
  // Rebuilt only when a monitor came or went: a message costs no
  // allocation and no lock here.
  const uint64_t changed = changed_.load(std::memory_order_acquire);
  if (p.seen != changed) {
    std::lock_guard<std::mutex> lock(mu_);
    p.seen = changed;
    p.items.assign(1, zmq_pollitem_t{listener, 0, ZMQ_POLLIN, 0});
    p.polled.clear();
    for (const auto& m : monitors_) {
      p.items.push_back({m->pair.get(), 0, ZMQ_POLLIN, 0});
      p.polled.push_back(m.get());
    }
  }
  for (auto& i : p.items) i.revents = 0;
  int rc = zmq_poll(p.items.data(), static_cast<int>(p.items.size()), ms);
  if (rc < 0) {
    if (zmq_errno() == EINTR) return false;
    return absl::UnavailableError(absl::StrFormat("poll: %s", zmq_strerror(zmq_errno())));
  }
  p.ready.clear();
  for (size_t i = 1; rc > 0 && i < p.items.size(); ++i) {
    if (p.items[i].revents & ZMQ_POLLIN) p.ready.push_back(p.polled[i - 1]);
  }
  if (!p.ready.empty()) Read(p.ready);
  return (p.items[0].revents & ZMQ_POLLIN) != 0;
}

void TcpWatch::Read(const std::vector<const Monitor*>& ready) {
  std::vector<const Monitor*> done;
  for (const Monitor* m : ready) {
    void* sock = m->pair.get();
    const int peer_id = m->peer_id;
    for (;;) {
      zmq_msg_t ev, addr;
      zmq_msg_init(&ev);
      if (zmq_msg_recv(&ev, sock, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&ev);
        break;
      }
      uint16_t event = 0;
      uint32_t value = 0;
      if (zmq_msg_size(&ev) >= 6) {
        std::memcpy(&event, zmq_msg_data(&ev), 2);
        std::memcpy(&value, static_cast<char*>(zmq_msg_data(&ev)) + 2, 4);
      }
      zmq_msg_close(&ev);
      // An event is two frames, delivered together.
      zmq_msg_init(&addr);
      zmq_msg_recv(&addr, sock, 0);
      std::string endpoint(static_cast<char*>(zmq_msg_data(&addr)), zmq_msg_size(&addr));
      zmq_msg_close(&addr);
      if (event == ZMQ_EVENT_DISCONNECTED) {
        if (m->disconnects) m->disconnects->fetch_add(1);
        log::Verbose(1, "tcp: the connection to node %d (%s) broke; ZeroMQ reconnects", peer_id,
                     endpoint);
        continue;
      }
      if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
        std::lock_guard<std::mutex> lock(mu_);
        problems_.erase(peer_id);
        if (m->stop && std::find(done.begin(), done.end(), m) == done.end()) done.push_back(m);
        continue;
      }
      std::string why =
          event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH
              ? "the peer refused our CURVE key: this process's key file is not the tier's "
                "cluster key"
              : absl::StrFormat("the CURVE handshake failed (%s): one side has no key file, or "
                                "not the same one",
                                event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL
                                    ? absl::StrFormat("protocol error %#x", value)
                                    : std::string(zmq_strerror(static_cast<int>(value))));
      if (peer_id < 0) {
        // The listening side: ZAP already logged refused keys; this catches
        // peers without CURVE or with a wrong server key.
        // A refused peer retries every second or so: say it, not every time.
        if (event != ZMQ_EVENT_HANDSHAKE_FAILED_AUTH && (++refused_ <= 5 || refused_ % 100 == 0)) {
          log::Warn("tcp: refused a connection on %s: %s (%d so far)", endpoint, why, refused_);
        }
        continue;
      }
      std::lock_guard<std::mutex> lock(mu_);
      problems_[peer_id] = absl::StrFormat("%s (connecting to %s)", why, endpoint);
    }
  }
  if (!done.empty()) Retire(done);
}

void TcpWatch::Retire(const std::vector<const Monitor*>& done) {
  for (const Monitor* m : done) m->stop();
  std::lock_guard<std::mutex> lock(mu_);
  for (const Monitor* m : done) {
    auto it = std::find_if(monitors_.begin(), monitors_.end(),
                           [m](const std::unique_ptr<Monitor>& x) { return x.get() == m; });
    if (it != monitors_.end()) monitors_.erase(it);
  }
  count_.store(monitors_.size(), std::memory_order_release);
  changed_.fetch_add(1, std::memory_order_release);
}

std::string TcpWatch::Problem(int peer_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = problems_.find(peer_id);
  return it == problems_.end() ? "" : it->second;
}

}  // namespace geops
