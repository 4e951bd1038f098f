// Transport: the one seam between the cluster logic and the network.
//
// A transport listens on one address, opens a send path per peer id and
// delivers whole Messages. Implementations never copy payload bytes they can
// avoid and count the ones they cannot (stats().bytes_copied), so tests can
// hold the zero-copy contract to account.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/base/buffer.h"
#include "core/base/defaults.h"
#include "core/base/link.h"
#include "core/wire/message.h"

namespace geops {

struct TransportStats {
  std::atomic<uint64_t> messages_sent{0};
  std::atomic<uint64_t> messages_received{0};
  std::atomic<uint64_t> bytes_sent{0};      // header + payload
  std::atomic<uint64_t> bytes_received{0};
  std::atomic<uint64_t> malformed{0};       // dropped by the decoder
  std::atomic<uint64_t> bytes_copied{0};    // payload bytes copied in user space
  // tcp: received values moved out of ZeroMQ's per-frame allocations into
  // geops's recycled receive memory as they arrive (tcp_transport.h says
  // why); the one copy ZeroMQ's API leaves, reported on its own.
  std::atomic<uint64_t> bytes_staged{0};
  std::atomic<uint64_t> registrations{0};   // memory registrations made (ibv_reg_mr)
};

class Transport {
 public:
  virtual ~Transport() = default;
  Transport() = default;
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;

  virtual const char* name() const = 0;

  // Starts accepting on host:port (port 0: an ephemeral port); returns the
  // port actually bound.
  virtual absl::StatusOr<int> Listen(const std::string& host, int port) = 0;

  // Opens the send path to `peer_id`. Connecting an id again replaces its
  // path (a node table may move an id to a new address).
  virtual absl::Status Connect(int peer_id, const std::string& host, int port) = 0;

  // Makes `new_id` another name for the send path of `existing_id`, so a
  // peer that first knew us under a temporary id keeps hearing from the
  // same connection (the receiving tier binds ids to connections).
  virtual absl::Status Alias(int new_id, int existing_id) = 0;

  // Queues `msg` for msg.header.recipient. The segments' Buffers are kept
  // alive until the bytes have left, then released; the caller must not
  // write to them meanwhile.
  virtual absl::Status Send(const Message& msg) = 0;

  // Waits up to `timeout` for the next well-formed message. Returns
  // DeadlineExceeded when none came and Cancelled after Shutdown(). Malformed
  // input is counted in stats(), logged and skipped, never returned.
  virtual absl::StatusOr<Message> Receive(absl::Duration timeout) = 0;

  // Makes `buf` eligible for zero-copy transfer (RDMA registration, cached
  // by address range). A no-op for transports that need none.
  virtual absl::Status Register(const Buffer& buf) { return absl::OkStatus(); }

  // Announces where the segments of the message that `peer_id` will send
  // with `timestamp` should land: targets[i] for segment i, an empty Buffer
  // for a segment that may land in transport memory. Returns false when
  // this transport cannot place what was asked: the caller then copies what
  // arrives, and counts it. Segments that arrive elsewhere all the same (a
  // size that does not match, small ones sent eagerly) are the caller's to
  // copy too.
  virtual bool ExpectInto(int peer_id, int timestamp, std::vector<Buffer> targets) {
    return false;
  }

  // How many times the connection to `peer_id` has broken since it was
  // opened (TransportOptions::watch_disconnects; 0 where not watched). A
  // message in flight when it changes may be lost: callers that must not
  // lose requests send again what is still unanswered.
  virtual uint64_t Disconnects(int peer_id) const { return 0; }

  // Why the path to `peer_id` cannot carry messages, when the transport
  // knows (a refused security handshake); empty otherwise. Callers waiting
  // for an answer use it to fail at once with the cause.
  virtual std::string PeerProblem(int peer_id) const { return ""; }

  // Unblocks Receive() for good. Pending sends are still flushed (briefly)
  // when the transport is destroyed.
  virtual void Shutdown() = 0;

  const TransportStats& stats() const { return stats_; }

 protected:
  TransportStats stats_;
};

struct TransportOptions {
  VanType van = VanType::kTcp;
  // rdma only.
  size_t rdma_mem_limit = defaults::kRdmaMemLimit;    // bound on registered bytes
  size_t rdma_slot_bytes = defaults::kRdmaSlotBytes;  // larger messages use a rendezvous
  // How long one connection may take to come up (rdma: address, route and
  // accept, retried; the peer may not have started yet).
  absl::Duration connect_timeout = defaults::kStartupTimeout;
  // tcp: a peer that announces a bigger frame is disconnected before any of
  // it is buffered (ZMQ_MAXMSGSIZE), and Send refuses to build one.
  size_t max_message_bytes = defaults::kMaxMessageBytes;
  // rdma: the shared secret every connection must carry (GEOPS_RDMA_SECRET_FILE).
  std::string rdma_secret;
  // tcp: run ZeroMQ CURVE with this cluster key pair (see core/transport/curve.h).
  std::optional<CurveKeys> curve;
  // tcp: count broken connections per peer (Disconnects), for resends.
  bool watch_disconnects = false;
  // tcp: move large received values out of ZeroMQ's frames into recycled
  // memory at once (tcp_transport.h says why). A server turns it off: it
  // sums each value and drops it, or keeps only each key's latest result,
  // so ZeroMQ's frames are freed as fast as they come and stay warm.
  bool stage_received = true;
};

// The transport asked for; a clear error when this build or machine cannot
// provide it (no RDMA device, rdma-core missing at build time).
absl::StatusOr<std::unique_ptr<Transport>> MakeTransport(const TransportOptions& options);

}  // namespace geops
