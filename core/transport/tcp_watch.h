// TcpWatch: the connection events of one TcpTransport's sockets, from
// ZeroMQ socket monitors read by the transport's receive thread.
//
// A refused handshake becomes a log line on the listening side and a
// Problem() on the dialling side; with disconnect counting, each DEALER's
// broken connections are counted, so a client can resend what they carried.
// A plain (not CURVE) dialled socket is watched only until its first
// handshake succeeds, which is when a peer running CURVE would have
// refused it; its monitor then stops, and the receive path is back to
// polling one socket.
//
// Lock: mu_ guards the monitor list and the problems; it is never held
// while a stop callback runs (those take the socket owner's lock).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace geops {

class TcpWatch {
 public:
  using Counter = std::shared_ptr<std::atomic<uint64_t>>;

  // `context`: the transport's ZeroMQ context (it outlives this watch).
  TcpWatch(void* context, bool curve, bool count_disconnects);
  ~TcpWatch();
  TcpWatch(const TcpWatch&) = delete;
  TcpWatch& operator=(const TcpWatch&) = delete;

  // Watches `sock`: the listener (peer_id < 0) or the DEALER to `peer_id`,
  // whose broken connections go to `disconnects` when counting is on.
  // `stop_monitor` stops the socket's monitor from the receive thread,
  // under the lock its owner sends with; with it, a plain socket is watched
  // only until its first handshake succeeds.
  void Add(void* sock, int peer_id, Counter disconnects, std::function<void()> stop_monitor);

  // Nothing is watched: the receive thread polls its listener alone.
  bool empty() const { return count_.load(std::memory_order_acquire) == 0; }

  // Waits up to `ms` for input on `listener` or any monitor and handles the
  // monitors' events; true when the listener has input. Receive() thread
  // only.
  absl::StatusOr<bool> Poll(void* listener, long ms);

  // Why the connection to `peer_id` cannot carry messages (a refused
  // handshake); empty when nothing is known against it.
  std::string Problem(int peer_id) const;

 private:
  struct PairCloser {
    void operator()(void* sock) const;
  };
  struct Monitor {
    std::unique_ptr<void, PairCloser> pair;  // the monitor's end
    int peer_id;                             // < 0: the listener
    Counter disconnects;
    std::function<void()> stop;  // set: watched until the first handshake
  };

  void Read(const std::vector<const Monitor*>& ready);
  // Stops and forgets the monitors of `done` (their handshakes succeeded).
  void Retire(const std::vector<const Monitor*>& done);

  void* const context_;
  const bool curve_;
  const bool count_disconnects_;

  mutable std::mutex mu_;
  std::vector<std::unique_ptr<Monitor>> monitors_;  // guarded by mu_
  std::map<int, std::string> problems_;             // guarded by mu_
  int next_ = 0;                                    // guarded by mu_
  std::atomic<size_t> count_{0};                    // monitors_.size()
  std::atomic<uint64_t> changed_{0};                // bumped on every add and removal

  // Receive() thread only: what it polls (the listener, then each
  // monitor), rebuilt when changed_ moves.
  struct PollSet;
  std::unique_ptr<PollSet> poll_;
  uint64_t refused_ = 0;  // handshakes the listener refused
};

}  // namespace geops
