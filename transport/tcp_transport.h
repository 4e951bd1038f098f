// TCP transport on ZeroMQ: one ROUTER socket receives from every peer, one
// DEALER per peer sends. Payload Buffers go to ZeroMQ by reference
// (zmq_msg_init_data) and received frames come back as Buffers over the
// ZeroMQ message itself, so neither direction copies in user space.
//
// Every DEALER carries a random routing id, so the ROUTER sees the same
// identity across reconnects; Receive() reports a hash of it as the
// message's origin. ZMQ_MAXMSGSIZE cuts a peer that announces a frame
// larger than the configured bound before any of it is buffered.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>

#include "transport/transport.h"

namespace geops {

class TcpTransport final : public Transport {
 public:
  explicit TcpTransport(size_t max_message_bytes = size_t{256} << 20);
  ~TcpTransport() override;

  const char* name() const override { return "tcp"; }
  absl::StatusOr<int> Listen(const std::string& host, int port) override;
  absl::Status Connect(int peer_id, const std::string& host, int port) override;
  absl::Status Alias(int new_id, int existing_id) override;
  absl::Status Send(const Message& msg) override;
  absl::StatusOr<Message> Receive(absl::Duration timeout) override;
  void Shutdown() override;

  // Bytes of received frames the application still holds as Buffers: the
  // frames themselves, lent out without a copy (they outlive no Buffer).
  int64_t receive_bytes_lent() const { return lent_->load(); }

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
  struct Peer {
    std::mutex mu;  // a ZeroMQ socket is not thread-safe
    SocketPtr socket;
  };

  // Reads the rest of a multipart message after the identity frame.
  absl::StatusOr<Message> ReadMessage();
  void Drain();

  const size_t max_message_bytes_;
  // Shared with the deleters of lent frames, which may run after we are gone.
  std::shared_ptr<std::atomic<int64_t>> lent_ = std::make_shared<std::atomic<int64_t>>(0);
  ContextPtr context_;
  SocketPtr receiver_;  // used only by the Receive() thread
  std::string listen_host_;  // source address of our connections (set by Listen)
  std::shared_mutex peers_mu_;
  std::map<int, std::shared_ptr<Peer>> peers_;
  std::atomic<bool> shutdown_{false};
};

}  // namespace geops
