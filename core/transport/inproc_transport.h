// InProcTransport: the Transport seam between objects of one process.
//
// Tiers, servers and workers that share an InProcNetwork reach each other
// by port, with no socket in between: unit tests of the tier protocol and
// of the servers' aggregation run in one process, deterministic and fast,
// while the multi-process tests keep covering the real transports. Every
// message still goes through the wire codec (the header is encoded and
// decoded, so a malformed one is counted and dropped as on tcp); its
// segments are handed over as the same Buffers, as zero-copy as it gets.
// Like ZeroMQ, a message sent to a port nobody listens on yet waits there.
#pragma once

#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>

#include "core/transport/transport.h"

namespace geops {

class InProcTransport;

// The "fabric" a set of in-process transports share.
class InProcNetwork {
 public:
  InProcNetwork() = default;
  InProcNetwork(const InProcNetwork&) = delete;
  InProcNetwork& operator=(const InProcNetwork&) = delete;

 private:
  friend class InProcTransport;
  struct Envelope {
    Buffer header;
    std::vector<Buffer> segments;
    uint64_t origin = 0;
  };
  std::mutex mu_;
  std::map<int, InProcTransport*> listeners_;    // by port
  std::map<int, std::deque<Envelope>> waiting_;  // sent before the port was bound
  int next_port_ = 40000;
};

class InProcTransport final : public Transport {
 public:
  explicit InProcTransport(std::shared_ptr<InProcNetwork> network);
  ~InProcTransport() override;

  const char* name() const override { return "inproc"; }
  absl::StatusOr<int> Listen(const std::string& host, int port) override;
  absl::Status Connect(int peer_id, const std::string& host, int port) override;
  absl::Status Alias(int new_id, int existing_id) override;
  absl::Status Send(const Message& msg) override;
  absl::StatusOr<Message> Receive(absl::Duration timeout) override;
  void Shutdown() override;

 private:
  // Queues an envelope for Receive(); called with the network's lock held.
  void DeliverLocked(InProcNetwork::Envelope e);

  std::shared_ptr<InProcNetwork> network_;
  const uint64_t origin_;  // what receivers see as Message::origin
  int port_ = 0;

  std::mutex peers_mu_;
  std::map<int, int> peers_;  // peer id -> port

  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::deque<InProcNetwork::Envelope> queue_;
  bool shutdown_ = false;
};

}  // namespace geops
