// The rdma transport (librdmacm + libibverbs, RC queue pairs): private to
// geops, reached only through MakeTransport (core/transport/transport.h) or, in
// tests and benches of this tree, MakeRdmaTransport. Not installed: it
// pulls in the verbs headers.
//
// The class is cut by concern, one file each:
//   connection.cc  rdma_cm events, queue pairs, connect retry, the secret
//   memory.cc      registration (cached on the Buffer's owner) and the pool
//   frames.cc      what travels in a SEND, and one handler per frame type
//   progress.cc    completion polling: the one progress model
//   rdma_transport.cc  the Transport calls and posting work requests
//
// Lock order (a thread holding one may take only those after it):
//   poll_mu_ -> conns_mu_ -> Conn::mu -> rdv_mu_ -> slots_mu_ -> RegisteredPool's
// (completion handlers run under poll_mu_). queue_mu_ and the progress
// gate's mutex are leaves: nothing is taken while they are held. No
// callback into the caller runs under any of them.
#pragma once

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#include <atomic>
#include <deque>
#include <map>
#include <memory>
#include <thread>
#include <variant>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "core/transport/rdma/connection.h"
#include "core/transport/rdma/frames.h"
#include "core/transport/rdma/memory.h"
#include "core/transport/rdma/progress.h"
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

class RdmaTransport final : public Transport {
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

  // connection.cc
  absl::Status InitDevice(ibv_context* verbs);
  absl::Status CreateQp(Conn& c);
  void StartConnect(Conn& c);
  void CmLoop();
  void StartDueRetries();
  void HandleCmEvent(rdma_cm_event* ev);
  void OnConnectRequest(rdma_cm_event* ev);
  void RetryOrFail(Conn& c, const std::string& why);
  void FailConn(Conn& c, const std::string& why);
  Conn* ConnByQp(uint32_t qp_num);

  // progress.cc
  void ProgressLoop();
  int PollOnce();
  bool RecentlyBusy() const;
  void HandleCompletion(const ibv_wc& wc);
  void OnRecvCompletion(const ibv_wc& wc);
  void OnSendCompletion(Conn& c, uint64_t seq);
  // Posts every free receive slot, in chains.
  absl::Status PostRecvSlotsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(slots_mu_);

  // frames.cc: one handler per frame type.
  void HandleFrame(Conn* c, Buffer slot, uint64_t origin);
  void OnEager(const rdma::FrameHeader& f, Buffer body, uint64_t origin);
  void OnRts(Conn& c, const rdma::FrameHeader& f, Buffer body, uint64_t origin);
  void OnCts(Conn& c, const rdma::FrameHeader& f, Buffer body);
  void OnPlaced(const rdma::FrameHeader& f, Buffer body, uint64_t origin);
  void OnWritesDone(uint32_t token);
  // Keeps what a peer advertised for its answer to (sender, timestamp).
  void RememberAdverts(int sender, int timestamp, std::vector<rdma::Advert> adverts);
  // Queues a decoded message for Receive(); counts and drops a malformed one.
  // `origin` names the queue pair it came on (Message::origin).
  void Deliver(absl::StatusOr<Message> decoded, uint64_t origin);

  // rdma_transport.cc: posting on a connection.
  void QueueOrPost(Conn& c, Outgoing out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(c.mu);
  absl::Status PostLocked(Conn& c, Outgoing& out, bool* posted)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(c.mu);
  // `msg` with the Adverts it carries and the places it may be written to.
  OutMessage Prepare(const Message& msg);
  absl::Status PostEagerLocked(Conn& c, const OutMessage& m) ABSL_EXCLUSIVE_LOCKS_REQUIRED(c.mu);
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

  mutable absl::Mutex conns_mu_;
  std::vector<std::shared_ptr<Conn>> conns_ ABSL_GUARDED_BY(conns_mu_);  // every one ever made
  std::map<int, std::shared_ptr<Conn>> peers_ ABSL_GUARDED_BY(conns_mu_);  // outgoing, by id
  std::map<uint32_t, Conn*> by_qp_ ABSL_GUARDED_BY(conns_mu_);

  // Rendezvous state, both directions.
  absl::Mutex rdv_mu_ ABSL_ACQUIRED_AFTER(conns_mu_);
  struct PendingRecv {
    Buffer header;
    std::vector<Buffer> targets;
    uint64_t origin = 0;
  };
  std::map<uint32_t, PendingRecv> pending_recvs_ ABSL_GUARDED_BY(rdv_mu_);  // by token (imm)
  uint32_t next_token_ ABSL_GUARDED_BY(rdv_mu_) = 1;
  // Where the response `peer` sends with a timestamp must land (ExpectInto).
  std::map<std::pair<int, int>, std::vector<Buffer>> expected_ ABSL_GUARDED_BY(rdv_mu_);
  // Where a peer asked its answer to land, by (peer, timestamp): taken by
  // the Send of that answer.
  std::map<std::pair<int, int>, std::vector<rdma::Advert>> adverts_ ABSL_GUARDED_BY(rdv_mu_);
  std::map<uint64_t, std::shared_ptr<WriteJob>> pending_sends_ ABSL_GUARDED_BY(rdv_mu_);
  uint64_t next_send_id_ ABSL_GUARDED_BY(rdv_mu_) = 1;

  // The shared receive queue's slots.
  absl::Mutex slots_mu_ ABSL_ACQUIRED_AFTER(rdv_mu_);
  std::vector<Buffer> posted_slots_ ABSL_GUARDED_BY(slots_mu_);  // by wr_id; empty: not posted
  std::vector<uint32_t> free_slots_ ABSL_GUARDED_BY(slots_mu_);  // indices to post again

  // Delivered messages, oldest first.
  absl::Mutex queue_mu_;
  absl::CondVar queue_cv_;
  std::deque<Message> queue_ ABSL_GUARDED_BY(queue_mu_);

  // Progress (see progress.h): who polls the completion queue when.
  absl::Mutex poll_mu_;  // held by whoever drains the queue
  std::atomic<int64_t> last_work_ns_{0};
  rdma::ProgressGate gate_;
  std::thread cm_thread_;
  std::thread progress_thread_;
};

}  // namespace geops
