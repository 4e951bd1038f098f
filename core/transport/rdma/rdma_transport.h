// The rdma transport (librdmacm + libibverbs, RC queue pairs): private to
// geops, reached only through MakeTransport (core/transport/transport.h) or, in
// tests and benches of this tree, MakeRdmaTransport. Not installed: it
// pulls in the verbs headers.
//
// Cut by ownership: each piece of shared state is a class that owns its
// lock, and the transport composes them.
//   conn_table.h     ConnectionTable: every connection, by peer and by QP
//   connection.h     Conn: one queue pair, its backlog, rdma_cm's private data
//   rendezvous.h     Rendezvous: announced places, RTS/CTS state
//   receive_slots.h  ReceiveSlots: the shared receive queue's slots
//   progress.h       Progress: completion polling, the one progress model
//   delivery_queue.h DeliveryQueue: decoded messages for Receive()
//   memory.h         registration (cached on the Buffer's owner), the pool
//   frames.h         what travels in a SEND
// and the transport's own code, by concern:
//   rdma_transport.cc  the Transport calls
//   cm.cc              the device, listening, rdma_cm events, connect retry
//   post.cc            posting work requests on a connection
//   handlers.cc        one handler per completion and frame type
//
// Lock order: a thread holding one lock takes only locks further right,
// which is the direction of the calls (a class calls only into classes to
// its right):
//   Progress::poll_mu_ -> ConnectionTable::mu_ -> Conn::mu -> Rendezvous::mu_
//     -> RegisteredPool's -> DeliveryQueue::mu_, ProgressGate::mu_ (leaves)
// Completion handlers run under poll_mu_; ReceiveSlots has no lock of its
// own (only the poller uses it, under poll_mu_). No callback into the
// caller runs under any of them. The per-message path takes Conn::mu to
// send, and the poll lock (a try-lock) plus DeliveryQueue::mu_ to receive:
// peer and queue-pair lookups read an immutable index, and the rendezvous
// state is not locked while it is empty.
#pragma once

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "core/transport/rdma/conn_table.h"
#include "core/transport/rdma/connection.h"
#include "core/transport/rdma/delivery_queue.h"
#include "core/transport/rdma/frames.h"
#include "core/transport/rdma/memory.h"
#include "core/transport/rdma/progress.h"
#include "core/transport/rdma/rendezvous.h"
#include "core/transport/rdma/verbs_raii.h"
#include "core/transport/transport.h"

namespace geops {

// The knobs only the rdma transport has. Everything it shares with the
// other transports (rdma_slot_bytes, rdma_mem_limit, connect_timeout,
// rdma_secret) is inherited, so TransportOptions is the one place of its
// default.
struct RdmaOptions : TransportOptions {
  int srq_depth = 512;     // receive slots posted at once
  int send_depth = 512;    // send work requests per queue pair
  int signal_every = 16;   // selective signalling interval
  // How long a waiting receiver polls the completion queue itself after
  // the last completion before it sleeps (latency vs. an idle core). Once
  // a round trip takes longer than this, every message pays two thread
  // wake-ups (progress thread, then receiver), which lengthens the round
  // trip further: on SoftRoCE under emulation, 500 us put 64 B ping-pong
  // at ~1 ms one way for good, 5 ms at ~30 us (ib_send_lat: ~15 us).
  absl::Duration spin = absl::Milliseconds(5);
};

// An rdma transport, or "no RDMA device" when the machine has none.
absl::StatusOr<std::unique_ptr<Transport>> MakeRdmaTransport(const RdmaOptions& options);

namespace rdma {

// The one probe for RDMA hardware: FailedPrecondition, with the fixes,
// when ibv_get_device_list finds no device.
absl::Status ProbeDevice();

}  // namespace rdma

class RdmaTransport final : public Transport, private rdma::CompletionHandler {
 public:
  static absl::StatusOr<std::unique_ptr<RdmaTransport>> Create(RdmaOptions options);
  ~RdmaTransport() override;

  const char* name() const override { return "rdma"; }
  absl::StatusOr<int> Listen(const std::string& host, int port) override;
  absl::Status Connect(int peer_id, const std::string& host, int port) override;
  absl::Status Alias(int new_id, int existing_id) override;
  absl::Status Send(const Message& msg) override;
  absl::StatusOr<Message> Receive(absl::Duration timeout) override;
  absl::Status Register(const Buffer& buf) override;
  bool ExpectInto(int peer_id, int timestamp, std::vector<Buffer> targets) override;
  void Shutdown() override;
  std::string PeerProblem(int peer_id) const override;

 private:
  using Conn = rdma::Conn;
  using Outgoing = rdma::Outgoing;
  using OutMessage = rdma::OutMessage;
  using WriteJob = rdma::WriteJob;

  explicit RdmaTransport(RdmaOptions options);

  // cm.cc
  absl::Status InitDevice(ibv_context* verbs);
  absl::Status CreateQp(Conn& c);
  void StartConnect(Conn& c);
  void CmLoop();
  void StartDueRetries();
  void HandleCmEvent(rdma_cm_event* ev);
  void OnConnectRequest(rdma_cm_event* ev);
  void RetryOrFail(Conn& c, const std::string& why);
  void FailConn(Conn& c, const std::string& why);

  // handlers.cc: what Progress calls, and one handler per frame type.
  void OnReceive(const ibv_wc& wc, Buffer slot) override;
  void OnSendDone(const ibv_wc& wc) override;
  void HandleFrame(uint32_t qp_num, Buffer slot);
  void OnEager(const rdma::FrameHeader& f, Buffer body, uint64_t origin);
  void OnRts(Conn& c, const rdma::FrameHeader& f, Buffer body, uint64_t origin);
  void OnCts(Conn& c, const rdma::FrameHeader& f, Buffer body);
  void OnPlaced(const rdma::FrameHeader& f, Buffer body, uint64_t origin);
  void OnWritesDone(uint32_t token);
  // Queues a decoded message for Receive(); counts and drops a malformed one.
  // `origin` names the queue pair it came on (Message::origin).
  void Deliver(absl::StatusOr<Message> decoded, uint64_t origin);

  // post.cc: posting on a connection.
  void QueueOrPost(Conn& c, Outgoing out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(c.mu);
  absl::Status PostLocked(Conn& c, Outgoing& out, bool* posted)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(c.mu);
  absl::Status PostEagerLocked(Conn& c, const Message& m,
                               const std::vector<rdma::Advert>& adverts)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(c.mu);
  absl::Status PostRtsLocked(Conn& c, const OutMessage& m) ABSL_EXCLUSIVE_LOCKS_REQUIRED(c.mu);
  absl::Status PostPlacedLocked(Conn& c, const OutMessage& m) ABSL_EXCLUSIVE_LOCKS_REQUIRED(c.mu);
  absl::Status PostControlLocked(Conn& c, Buffer frame) ABSL_EXCLUSIVE_LOCKS_REQUIRED(c.mu);
  absl::Status PostWritesLocked(Conn& c, WriteJob& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(c.mu);
  absl::Status PostSendLocked(Conn& c, ibv_send_wr* wr, int wrs, std::vector<Buffer> keep,
                              bool force_signal) ABSL_EXCLUSIVE_LOCKS_REQUIRED(c.mu);
  void FlushLocked(Conn& c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(c.mu);
  // A registered source for segment `i` of `m`: the segment itself when its
  // owner was Register()ed, else a copy in the pool (counted for values).
  absl::StatusOr<Buffer> SourceOf(const Message& m, size_t i);
  // Counts a copy of segment `i` of `m` when it holds values
  // (Message::IsValueSegment): the copies the zero-copy promise is about.
  void CountCopy(const Message& m, size_t i, size_t bytes);

  // Constant after construction or after the first InitDevice (which runs
  // on the cm thread before any connection exists, or in Listen before
  // anything else uses the transport).
  RdmaOptions options_;
  std::shared_ptr<rdma::Device> device_;
  ibv_context* verbs_ = nullptr;
  rdma::EventChannelPtr events_;
  rdma::CmIdPtr listen_id_;
  rdma::CompChannelPtr comp_channel_;
  rdma::CqPtr cq_;
  rdma::SrqPtr srq_;
  std::unique_ptr<rdma::RegisteredPool> pool_;
  sockaddr_in bound_{};
  bool listening_ = false;
  std::atomic<uint32_t> max_inline_{0};
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> secret_refused_{0};

  // Each owns its lock; the order is in the comment at the top.
  rdma::ConnectionTable conns_;
  rdma::Rendezvous rdv_;
  rdma::DeliveryQueue delivered_;
  rdma::Progress progress_;
  std::thread cm_thread_;
};

}  // namespace geops
