// Completion polling for the rdma transport: the progress model of
// progress.h, its hand-over (ProgressGate), and the progress thread.
#include "core/transport/rdma/progress.h"

#include <poll.h>

#include <algorithm>

#include "absl/time/clock.h"

namespace geops::rdma {

void ProgressGate::Enter() { spinners_.fetch_add(1); }

void ProgressGate::Leave(bool sleeping) {
  if (!sleeping) {
    // Before the count drops, so that a progress thread that sees no
    // spinner also sees the grace period.
    left_ns_.store(absl::GetCurrentTimeNanos());
    spinners_.fetch_sub(1);
    return;
  }
  left_ns_.store(0);
  if (spinners_.fetch_sub(1) == 1) {
    absl::MutexLock lock(&mu_);
    cv_.SignalAll();
  }
}

bool ProgressGate::WaitForTurn() {
  absl::MutexLock lock(&mu_);
  const int spinners = spinners_.load();
  const int64_t left = left_ns_.load();
  int64_t now = absl::GetCurrentTimeNanos();
  int64_t grace_end = left == 0 ? 0 : left + spin_ns_;
  if (spinners == 0 && now >= grace_end) return true;
  // While someone spins, the timeout only bounds how late this thread
  // notices a receiver that left with a message and never came back.
  int64_t wait = spinners > 0 ? 20 * spin_ns_ : grace_end - now;
  cv_.WaitWithTimeout(&mu_, absl::Nanoseconds(std::max<int64_t>(wait, 1000)));
  return false;
}

Progress::Progress(absl::Duration spin, CompletionHandler* handler)
    : spin_ns_(absl::ToInt64Nanoseconds(spin)), handler_(handler), gate_(spin) {}

Progress::~Progress() { Stop(); }

absl::Status Progress::Start(ibv_cq* cq, ibv_comp_channel* channel,
                             std::unique_ptr<ReceiveSlots> slots) {
  cq_ = cq;
  channel_ = channel;
  {
    absl::MutexLock lock(&poll_mu_);
    slots_ = std::move(slots);
    if (auto s = slots_->PostFree(); !s.ok()) return s;
  }
  started_.store(true, std::memory_order_release);
  thread_ = std::thread([this] { Loop(); });
  return absl::OkStatus();
}

void Progress::Stop() {
  stopping_.store(true);
  if (thread_.joinable()) thread_.join();
  absl::MutexLock lock(&poll_mu_);
  if (slots_) slots_->Clear();
}

int Progress::PollOnce() {
  if (!poll_mu_.TryLock()) return 0;  // someone else is draining the queue
  ibv_wc wcs[32];
  int total = 0;
  for (;;) {
    int n = ibv_poll_cq(cq_, 32, wcs);
    if (n <= 0) break;
    for (int i = 0; i < n; ++i) {
      const ibv_wc& wc = wcs[i];
      if (wc.wr_id & kRecvFlag) {
        handler_->OnReceive(wc, slots_->Take(wc.wr_id, wc.status != IBV_WC_SUCCESS));
      } else {
        handler_->OnSendDone(wc);
      }
    }
    total += n;
  }
  poll_mu_.Unlock();
  if (total > 0) last_work_ns_.store(absl::GetCurrentTimeNanos(), std::memory_order_relaxed);
  return total;
}

bool Progress::RecentlyBusy() const {
  return absl::GetCurrentTimeNanos() - last_work_ns_.load(std::memory_order_relaxed) < spin_ns_;
}

void Progress::Loop() {
  while (!stopping_.load()) {
    if (!gate_.WaitForTurn()) continue;
    if (PollOnce() > 0) continue;
    // Nothing to do: sleep on the completion channel, so that an idle node
    // burns no core and a receiver that spins has the processor to itself.
    ibv_req_notify_cq(cq_, 0);
    if (PollOnce() > 0) continue;  // closes the race with the arm
    pollfd p{channel_->fd, POLLIN, 0};
    if (poll(&p, 1, 100) > 0) {
      ibv_cq* cq = nullptr;
      void* ctx = nullptr;
      if (ibv_get_cq_event(channel_, &cq, &ctx) == 0) ibv_ack_cq_events(cq, 1);
    }
  }
}

}  // namespace geops::rdma
