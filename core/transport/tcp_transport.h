// TCP transport on ZeroMQ: one ROUTER socket receives from every peer, one
// DEALER per peer sends. Payload Buffers go to ZeroMQ by reference
// (zmq_msg_init_data): sending copies nothing in user space.
//
// Receiving, ZeroMQ allocates every frame larger than its 8 KiB read batch
// with malloc, and there is no stable API to hand it memory instead. Kept
// until the application drops it, such a frame costs a page fault per 4 KiB
// (the C library trims and unmaps big freed blocks; the next frames fault
// fresh pages in). So a large value frame is moved at once, while it is
// still in cache, into memory geops keeps: the destination announced with
// ExpectInto (a pull that lands in the caller's buffer) or a recycled
// BufferPool slot; ZeroMQ's block is freed at once and reused warm by the
// next frame. That is one user-space copy per received large value,
// counted in stats().bytes_staged, in place of the faults. Small frames,
// and every frame of a server (stage_received off: it releases them as
// fast as they arrive), come back as Buffers over the ZeroMQ message.
//
// Every DEALER carries a random routing id, so the ROUTER sees the same
// identity across reconnects; Receive() reports a hash of it as the
// message's origin. ZMQ_MAXMSGSIZE cuts a peer that announces a frame
// larger than the configured bound before any of it is buffered.
//
// With a cluster key (core/transport/curve.h) every socket runs CURVE; socket
// monitors (tcp_watch.h), read by the Receive() thread, turn a refused handshake into a
// log line on the listening side and a PeerProblem() on the dialling side.
// With watch_disconnects the same monitors count each DEALER's broken
// connections (Disconnects), so a client can resend what they carried.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <vector>

#include "core/base/buffer_pool.h"
#include "core/transport/curve.h"
#include "core/transport/tcp_watch.h"
#include "core/transport/transport.h"

namespace geops {

class TcpTransport final : public Transport {
 public:
  explicit TcpTransport(size_t max_message_bytes = defaults::kMaxMessageBytes);
  // With `curve`, encrypted and restricted to holders of the cluster key.
  static absl::StatusOr<std::unique_ptr<TcpTransport>> Create(size_t max_message_bytes,
                                                              std::optional<CurveKeys> curve,
                                                              bool watch_disconnects = false,
                                                              bool stage_received = true);
  ~TcpTransport() override;

  const char* name() const override { return "tcp"; }
  absl::StatusOr<int> Listen(const std::string& host, int port) override;
  absl::Status Connect(int peer_id, const std::string& host, int port) override;
  absl::Status Alias(int new_id, int existing_id) override;
  absl::Status Send(const Message& msg) override;
  absl::StatusOr<Message> Receive(absl::Duration timeout) override;
  void Shutdown() override;
  std::string PeerProblem(int peer_id) const override;
  uint64_t Disconnects(int peer_id) const override;
  // The values of the message `peer_id` sends with `timestamp` are moved
  // into `targets` on arrival (when their sizes match) instead of a pool
  // slot. Announcements nobody answers are forgotten oldest first.
  bool ExpectInto(int peer_id, int timestamp, std::vector<Buffer> targets) override;

  // Value frames at least this large are moved out of ZeroMQ on arrival.
  static constexpr size_t kMoveFrameBytes = 8193;
  const BufferPool& receive_pool() const { return pool_; }

  // Bytes of received frames the application still holds as Buffers: the
  // frames themselves, lent out without a copy (they outlive no Buffer).
  int64_t receive_bytes_lent() const { return lent_->load(); }
  // CURVE clients refused by the ZAP handler (0 without CURVE).
  uint64_t curve_refused() const { return zap_ ? zap_->refused() : 0; }

 private:
  // RAII owners of ZeroMQ handles.
  struct ContextDeleter {
    void operator()(void* ctx) const;
  };
  struct SocketDeleter {
    void operator()(void* sock) const;
  };
  using ContextPtr = std::unique_ptr<void, ContextDeleter>;
  using SocketPtr = std::unique_ptr<void, SocketDeleter>;
  using Counter = TcpWatch::Counter;
  struct Peer {
    std::mutex mu;  // a ZeroMQ socket is not thread-safe
    SocketPtr socket;
    Counter disconnects = std::make_shared<std::atomic<uint64_t>>(0);
  };
  // Reads the rest of a multipart message after the identity frame.
  absl::StatusOr<Message> ReadMessage();
  // Moves msg's large value frames into announced targets or pool slots.
  void Settle(Message& msg);
  void Drain();
  // CURVE on `sock` as server (listening) or client (dialling).
  void SecureLocked(void* sock, bool server);
  const size_t max_message_bytes_;
  // Shared with the deleters of lent frames, which may run after we are gone.
  std::shared_ptr<std::atomic<int64_t>> lent_ = std::make_shared<std::atomic<int64_t>>(0);
  ContextPtr context_;
  SocketPtr receiver_;  // used only by the Receive() thread
  std::string listen_host_;  // source address of our connections (set by Listen)
  mutable std::shared_mutex peers_mu_;
  std::map<int, std::shared_ptr<Peer>> peers_;
  std::atomic<bool> shutdown_{false};

  BufferPool pool_;  // receive memory; lent slots outlive us safely
  std::mutex expect_mu_;
  struct Expected {
    uint64_t seq;  // announcement order, to forget the oldest
    std::vector<Buffer> targets;
  };
  std::map<std::pair<int, int>, Expected> expected_;  // by (peer, timestamp)
  std::map<uint64_t, std::pair<int, int>> expect_order_;
  uint64_t expect_seq_ = 0;
  std::atomic<size_t> expected_count_{0};  // expected_.size(), read without the lock

  std::optional<CurveKeys> curve_;
  bool stage_received_ = true;
  std::unique_ptr<ZapHandler> zap_;  // before context_ is terminated: declared after it
  // Handshakes and broken connections (tcp_watch.h); before context_ in
  // destruction: declared after it.
  std::unique_ptr<TcpWatch> watch_;
};

}  // namespace geops
