// The rdma transport's one progress model.
//
// Completions are polled by whoever holds Progress's poll lock; nothing
// else drives the transport. A thread waiting in Receive() polls the
// completion queue itself while it spins (for RdmaOptions::spin after the
// last work), so a message on the latency path costs no wake-up; the
// progress thread polls for everyone else (sends completing, rendezvous
// answers, messages nobody is waiting for) and, once the queue is idle,
// sleeps on the completion channel so an idle node burns no core. The two
// never compete: the progress thread stands aside while a receiver spins
// and for `spin` after one left with a message (it is likely back within
// microseconds), and takes over at once when a receiver goes to sleep.
// ProgressGate is that hand-over; PollOnce takes the poll lock with a
// try-lock, so a second poller returns at once instead of queueing behind
// the first. The cm thread (cm.cc) handles connection events only and
// never polls.
//
// Progress is the top of the transport's lock order: it calls the
// CompletionHandler, which takes the locks below it, while holding the
// poll lock; nothing calls into Progress holding another lock.
#pragma once

#include <infiniband/verbs.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/base/buffer.h"
#include "core/transport/rdma/receive_slots.h"

namespace geops::rdma {

class ProgressGate {
 public:
  explicit ProgressGate(absl::Duration spin) : spin_ns_(absl::ToInt64Nanoseconds(spin)) {}

  // A receiver starts polling the completion queue itself. Lock-free: a
  // receiver enters and leaves once per message.
  void Enter();
  // It stops: `sleeping` when it is about to block (the progress thread
  // takes over at once: this one takes the lock, to wake it), else it
  // leaves with a message (and is likely back; lock-free).
  void Leave(bool sleeping) ABSL_LOCKS_EXCLUDED(mu_);
  // The progress thread: true when it may poll now; otherwise it waits a
  // bounded while (no receiver wakes it per message) and returns false.
  bool WaitForTurn() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  const int64_t spin_ns_;
  // Only for the progress thread's sleep: a sleeping Leave signals under
  // it, so a wake-up between WaitForTurn's check and its wait is not lost.
  absl::Mutex mu_;  // a leaf: nothing is taken while it is held
  absl::CondVar cv_;
  std::atomic<int> spinners_{0};
  // When the last receiver left with a message; 0 once one went to sleep.
  std::atomic<int64_t> left_ns_{0};
};

// What a completion means is the transport's; Progress only dispatches.
// Called with the poll lock held, one completion at a time.
class CompletionHandler {
 public:
  virtual ~CompletionHandler() = default;
  // A receive (a SEND's frame, or the immediate of a write): `slot` is the
  // receive slot it filled (already replaced in the queue).
  virtual void OnReceive(const ibv_wc& wc, Buffer slot) = 0;
  // A signalled send, or a failed one.
  virtual void OnSendDone(const ibv_wc& wc) = 0;
};

class Progress {
 public:
  Progress(absl::Duration spin, CompletionHandler* handler);
  ~Progress();  // Stop()s
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // Posts every slot and starts the progress thread. Once only.
  absl::Status Start(ibv_cq* cq, ibv_comp_channel* channel, std::unique_ptr<ReceiveSlots> slots)
      ABSL_LOCKS_EXCLUDED(poll_mu_);
  bool started() const { return started_.load(std::memory_order_acquire); }
  // The progress thread stops polling soon (Transport::Shutdown).
  void RequestStop() { stopping_.store(true); }
  // Joins the progress thread and drops the receive slots.
  void Stop() ABSL_LOCKS_EXCLUDED(poll_mu_);

  // Drains the completion queue unless someone else is: the completions
  // handled (0 when another poller holds the lock).
  int PollOnce() ABSL_LOCKS_EXCLUDED(poll_mu_);
  // Whether any completion came within the last `spin`.
  bool RecentlyBusy() const;
  ProgressGate& gate() { return gate_; }

 private:
  void Loop();

  const int64_t spin_ns_;
  CompletionHandler* const handler_;
  // Set in Start, before the thread exists; constant after.
  ibv_cq* cq_ = nullptr;
  ibv_comp_channel* channel_ = nullptr;
  std::atomic<bool> started_{false};
  std::atomic<bool> stopping_{false};

  absl::Mutex poll_mu_;  // held by whoever drains the queue
  std::unique_ptr<ReceiveSlots> slots_ ABSL_GUARDED_BY(poll_mu_);
  std::atomic<int64_t> last_work_ns_{0};
  ProgressGate gate_;
  std::thread thread_;
};

}  // namespace geops::rdma
