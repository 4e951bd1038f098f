// RDMA transport on librdmacm + libibverbs (RC queue pairs).
//
// Small messages (header and segments fit a receive slot) travel as one
// SEND into a slot of a shared receive queue, inline when the device
// allows. Larger ones use a rendezvous: the sender SENDs the header (RTS),
// the receiver answers with registered target addresses (CTS) and the
// sender RDMA_WRITEs every segment straight from the caller's registered
// Buffers, the last write carrying an immediate that completes the message
// at the receiver. Targets come from a registered pool, or are the
// caller's own buffers announced with ExpectInto (a pull that lands in
// place). Send completions are signalled selectively; one progress thread
// polls the completion queue while busy and sleeps on its completion
// channel when idle. Every rdma_cm event is handled: connects retry on
// address, route, unreachable and reject errors until a deadline, then fail
// with a clear message; a disconnect marks the peer down.
#pragma once

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <variant>
#include <vector>

#include "transport/rdma/memory.h"
#include "transport/rdma/verbs_raii.h"
#include "transport/transport.h"

namespace geops {

struct RdmaOptions {
  size_t slot_bytes = 16 * 1024;       // receive slot; larger messages rendezvous
  int srq_depth = 512;                 // receive slots posted at once
  int send_depth = 512;                // send work requests per queue pair
  int signal_every = 16;               // selective signalling interval
  size_t mem_limit = size_t{2} << 30;  // bound on registered bytes
  absl::Duration connect_timeout = absl::Seconds(60);
  // How long a waiting receiver polls the completion queue itself after
  // the last completion before it sleeps (latency vs. an idle core).
  absl::Duration spin = absl::Microseconds(500);
  // Shared secret (GEOPS_RDMA_SECRET_FILE) sent in rdma_cm private data at
  // connect and required of every incoming connection; empty: none. It
  // keeps strangers on the fabric out of the tier; it travels in clear and
  // encrypts nothing.
  std::string secret;
};

class RdmaTransport final : public Transport {
 public:
  // Fails with "no RDMA device" when the machine has none.
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
  struct WriteJob;
  // A message, the writes of a rendezvous, or a control frame (CTS).
  using Outgoing = std::variant<Message, std::shared_ptr<WriteJob>, Buffer>;
  struct Conn;

  explicit RdmaTransport(RdmaOptions options);
  absl::Status InitDevice(ibv_context* verbs);
  absl::Status CreateQp(Conn& c);
  void StartConnect(Conn& c);
  void CmLoop();
  void HandleCmEvent(rdma_cm_event* ev);
  void RetryOrFail(Conn& c, const std::string& why);
  void ProgressLoop();
  int PollOnce();
  bool RecentlyBusy() const;
  void HandleCompletion(const ibv_wc& wc);
  void HandleRecv(Conn* c, Buffer slot, uint64_t origin);
  // Queues a decoded message for Receive(); counts and drops a malformed one.
  // `origin` names the queue pair it came on (Message::origin).
  void Deliver(absl::StatusOr<Message> decoded, uint64_t origin);
  // Posts every free receive slot, in one chain; called with slots_mu_ held.
  absl::Status PostRecvSlotsLocked();
  // Posting on a connection; called with c.mu held.
  absl::Status PostLocked(Conn& c, Outgoing& out, bool* posted);
  absl::Status PostEagerLocked(Conn& c, const Message& m);
  absl::Status PostRtsLocked(Conn& c, const Message& m);
  absl::Status PostControlLocked(Conn& c, Buffer frame);
  absl::Status PostWritesLocked(Conn& c, WriteJob& job);
  absl::Status PostSendLocked(Conn& c, ibv_send_wr* wr, int wrs, std::vector<Buffer> keep,
                              bool force_signal);
  void FlushLocked(Conn& c);
  void OnSendCompletion(Conn& c, uint64_t seq);
  void FailConn(Conn& c, const std::string& why);
  absl::StatusOr<Buffer> SendSlot(size_t bytes);
  Conn* ConnByQp(uint32_t qp_num);

  RdmaOptions options_;
  std::shared_ptr<rdma::Device> device_;
  ibv_context* verbs_ = nullptr;
  rdma::EventChannelPtr events_;
  rdma::CmIdPtr listen_id_;
  rdma::CompChannelPtr comp_channel_;
  rdma::CqPtr cq_;
  ibv_srq* srq_ = nullptr;
  std::unique_ptr<rdma::RegisteredPool> pool_;
  sockaddr_in bound_{};
  bool listening_ = false;
  uint32_t max_inline_ = 0;

  mutable std::mutex conns_mu_;
  std::atomic<uint64_t> secret_refused_{0};
  std::vector<std::shared_ptr<Conn>> conns_;  // every connection ever made
  std::map<int, std::shared_ptr<Conn>> peers_;     // outgoing, by peer id
  std::map<uint32_t, Conn*> by_qp_;

  // Receive side.
  std::mutex slots_mu_;
  std::vector<Buffer> posted_slots_;  // by index (the wr_id); empty: not posted
  std::vector<uint32_t> free_slots_;  // indices to post again
  struct PendingRecv {
    Buffer header;
    std::vector<Buffer> targets;
    uint64_t origin = 0;
  };
  std::mutex rdv_mu_;
  std::map<uint32_t, PendingRecv> pending_recvs_;   // by token (imm data)
  uint32_t next_token_ = 1;
  std::map<std::pair<int, int>, std::vector<Buffer>> expected_;  // (peer, ts) -> targets
  std::map<uint64_t, std::shared_ptr<WriteJob>> pending_sends_;  // by rendezvous id
  uint64_t next_send_id_ = 1;

  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::deque<Message> queue_;

  std::mutex poll_mu_;
  std::atomic<int64_t> last_work_ns_{0};
  std::mutex spin_mu_;
  std::condition_variable spin_cv_;
  int spinners_ = 0;  // receivers polling the queue themselves right now
  // When the last receiver left with a message (it is likely back soon, so
  // the progress thread keeps out of the way for `spin` after it); 0 once
  // a receiver went to sleep, which hands over at once.
  int64_t spin_left_ns_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread cm_thread_;
  std::thread progress_thread_;
};

}  // namespace geops
