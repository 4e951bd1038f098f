// The rdma transport's one progress model.
//
// Completions are polled by whoever holds poll_mu_; nothing else drives
// the transport. A thread waiting in Receive() polls the completion queue
// itself while it spins (for RdmaOptions::spin after the last work), so a
// message on the latency path costs no wake-up; the transport's progress
// thread polls for everyone else (sends completing, rendezvous answers,
// messages nobody is waiting for) and, once the queue is idle, sleeps on
// the completion channel so an idle node burns no core. The two never
// compete: the progress thread stands aside while a receiver spins and for
// `spin` after one left with a message (it is likely back within
// microseconds), and takes over at once when a receiver goes to sleep.
// ProgressGate is that hand-over; PollOnce (progress.cc) takes poll_mu_
// with a try-lock, so a second poller returns at once instead of queueing
// behind the first. The cm thread (connection.cc) handles connection
// events only and never polls.
#pragma once

#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace geops::rdma {

class ProgressGate {
 public:
  explicit ProgressGate(absl::Duration spin) : spin_ns_(absl::ToInt64Nanoseconds(spin)) {}

  // A receiver starts polling the completion queue itself.
  void Enter();
  // It stops: `sleeping` when it is about to block (the progress thread
  // takes over at once), else it leaves with a message (and is likely back).
  void Leave(bool sleeping);
  // The progress thread: true when it may poll now; otherwise it waits a
  // bounded while (no receiver wakes it per message) and returns false.
  bool WaitForTurn();

 private:
  const int64_t spin_ns_;
  absl::Mutex mu_;
  absl::CondVar cv_;
  int spinners_ ABSL_GUARDED_BY(mu_) = 0;
  // When the last receiver left with a message; 0 once one went to sleep.
  int64_t left_ns_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace geops::rdma
