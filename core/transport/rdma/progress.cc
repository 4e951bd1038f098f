// Completion polling for the rdma transport, and Receive(): the progress
// model of progress.h, its hand-over (ProgressGate), and the dispatch of
// every completion to its handler.
#include "core/transport/rdma/progress.h"

#include <arpa/inet.h>
#include <poll.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <optional>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "core/base/log.h"
#include "core/transport/rdma/rdma_transport.h"

namespace geops {
namespace rdma {

void ProgressGate::Enter() {
  absl::MutexLock lock(&mu_);
  ++spinners_;
}

void ProgressGate::Leave(bool sleeping) {
  absl::MutexLock lock(&mu_);
  --spinners_;
  if (sleeping) {
    left_ns_ = 0;
    if (spinners_ == 0) cv_.SignalAll();
  } else {
    left_ns_ = absl::GetCurrentTimeNanos();
  }
}

bool ProgressGate::WaitForTurn() {
  absl::MutexLock lock(&mu_);
  int64_t now = absl::GetCurrentTimeNanos();
  int64_t grace_end = left_ns_ == 0 ? 0 : left_ns_ + spin_ns_;
  if (spinners_ == 0 && now >= grace_end) return true;
  // While someone spins, the timeout only bounds how late this thread
  // notices a receiver that left with a message and never came back.
  int64_t wait = spinners_ > 0 ? 20 * spin_ns_ : grace_end - now;
  cv_.WaitWithTimeout(&mu_, absl::Nanoseconds(std::max<int64_t>(wait, 1000)));
  return false;
}

}  // namespace rdma

int RdmaTransport::PollOnce() {
  if (!poll_mu_.TryLock()) return 0;  // someone else is draining the queue
  ibv_wc wcs[32];
  int total = 0;
  for (;;) {
    int n = ibv_poll_cq(cq_.get(), 32, wcs);
    if (n <= 0) break;
    for (int i = 0; i < n; ++i) HandleCompletion(wcs[i]);
    total += n;
  }
  poll_mu_.Unlock();
  if (total > 0) last_work_ns_.store(absl::GetCurrentTimeNanos(), std::memory_order_relaxed);
  return total;
}

bool RdmaTransport::RecentlyBusy() const {
  return absl::GetCurrentTimeNanos() - last_work_ns_.load(std::memory_order_relaxed) <
         absl::ToInt64Nanoseconds(options_.spin);
}

void RdmaTransport::ProgressLoop() {
  while (!stopping_.load()) {
    if (!gate_.WaitForTurn()) continue;
    if (PollOnce() > 0) continue;
    // Nothing to do: sleep on the completion channel, so that an idle node
    // burns no core and a receiver that spins has the processor to itself.
    ibv_req_notify_cq(cq_.get(), 0);
    if (PollOnce() > 0) continue;  // closes the race with the arm
    pollfd p{comp_channel_->fd, POLLIN, 0};
    if (poll(&p, 1, 100) > 0) {
      ibv_cq* cq = nullptr;
      void* ctx = nullptr;
      if (ibv_get_cq_event(comp_channel_.get(), &cq, &ctx) == 0) ibv_ack_cq_events(cq, 1);
    }
  }
}

absl::StatusOr<Message> RdmaTransport::Receive(absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  absl::Time spin_until = absl::Now() + options_.spin;
  // Counted in the gate from here until it blocks or returns.
  bool spinning = false;
  auto stop_spinning = [&](bool sleeping) {
    if (!spinning) return;
    spinning = false;
    gate_.Leave(sleeping);
  };
  for (;;) {
    std::optional<absl::StatusOr<Message>> out;
    bool block = false;
    absl::Time now;
    {
      absl::MutexLock lock(&queue_mu_);
      if (stopping_.load()) {
        out = absl::CancelledError("transport shut down");
      } else if (!queue_.empty()) {
        out = std::move(queue_.front());
        queue_.pop_front();
      } else {
        now = absl::Now();
        block = now >= deadline || cq_ == nullptr || (now >= spin_until && !RecentlyBusy());
      }
    }
    if (out) {
      stop_spinning(/*sleeping=*/!out->ok());
      return std::move(*out);
    }
    if (block) {
      stop_spinning(/*sleeping=*/true);
      if (now >= deadline) return absl::DeadlineExceededError("no message");
      // Nothing lately: block; the progress thread delivers.
      absl::MutexLock lock(&queue_mu_);
      if (queue_.empty() && !stopping_.load()) {
        queue_cv_.WaitWithTimeout(&queue_mu_, std::min(deadline - now, absl::Milliseconds(100)));
      }
      spin_until = absl::Now() + options_.spin;
      continue;
    }
    if (!spinning) {
      spinning = true;
      gate_.Enter();
    }
    // Poll a batch before looking at the queue and the clock again: both
    // cost more than an empty poll, which is a few loads.
    for (int i = 0; i < 64 && PollOnce() == 0; ++i) {
    }
  }
}

absl::Status RdmaTransport::PostRecvSlotsLocked() {
  // One chain per call: slots are handed back in batches (see
  // OnRecvCompletion), so posting costs one call per batch, not per message.
  constexpr size_t kChain = 64;
  ibv_sge sges[kChain];
  ibv_recv_wr wrs[kChain];
  while (!free_slots_.empty()) {
    size_t n = 0;
    for (; n < kChain && n < free_slots_.size(); ++n) {
      uint32_t idx = free_slots_[free_slots_.size() - 1 - n];
      Buffer& slot = posted_slots_[idx];
      if (slot.empty()) {
        auto b = pool_->Get(options_.rdma_slot_bytes);
        if (!b.ok()) {
          if (n == 0) return b.status();
          break;
        }
        slot = std::move(*b);
      }
      sges[n] = {reinterpret_cast<uintptr_t>(slot.data()), static_cast<uint32_t>(slot.size()),
                 rdma::RegionOf(*device_, slot)->lkey};
      wrs[n] = {};
      wrs[n].wr_id = idx | rdma::kRecvFlag;
      wrs[n].sg_list = &sges[n];
      wrs[n].num_sge = 1;
      if (n > 0) wrs[n - 1].next = &wrs[n];
    }
    ibv_recv_wr* bad = nullptr;
    if (ibv_post_srq_recv(srq_.get(), wrs, &bad) != 0) {
      // Whatever came before `bad` is posted.
      size_t posted = 0;
      for (ibv_recv_wr* w = wrs; w != bad && posted < n; w = w->next) ++posted;
      free_slots_.resize(free_slots_.size() - posted);
      return absl::UnavailableError(
          absl::StrFormat("rdma: ibv_post_srq_recv: %s", std::strerror(errno)));
    }
    free_slots_.resize(free_slots_.size() - n);
  }
  return absl::OkStatus();
}

void RdmaTransport::HandleCompletion(const ibv_wc& wc) {
  if (wc.wr_id & rdma::kRecvFlag) {
    OnRecvCompletion(wc);
    return;
  }
  Conn* c = ConnByQp(wc.qp_num);
  if (c == nullptr) return;
  if (wc.status != IBV_WC_SUCCESS) {
    FailConn(*c, absl::StrFormat("send to %s failed: %s",
                                 c->outgoing ? absl::StrFormat("node %d", c->peer)
                                             : std::string("a peer"),
                                 ibv_wc_status_str(wc.status)));
    absl::MutexLock lock(&c->mu);
    c->held.clear();
    c->sq_used = 0;
    return;
  }
  OnSendCompletion(*c, wc.wr_id);
}

void RdmaTransport::OnRecvCompletion(const ibv_wc& wc) {
  Buffer slot;
  {
    // Keep the shared receive queue (nearly) full: the slot just consumed
    // may be held by the application for a while, so its index gets a
    // fresh slot; they are posted in batches.
    absl::MutexLock lock(&slots_mu_);
    uint64_t idx = wc.wr_id & ~rdma::kRecvFlag;
    if (idx < posted_slots_.size()) {
      slot = std::move(posted_slots_[idx]);
      posted_slots_[idx] = Buffer();
      free_slots_.push_back(static_cast<uint32_t>(idx));
    }
    size_t batch = std::clamp<size_t>(posted_slots_.size() / 8, 1, 32);
    if (free_slots_.size() >= batch || wc.status != IBV_WC_SUCCESS) {
      if (auto s = PostRecvSlotsLocked(); !s.ok()) log::Error("%s", s.message());
    }
  }
  if (wc.status != IBV_WC_SUCCESS) {
    if (wc.status != IBV_WC_WR_FLUSH_ERR) {
      log::Warn("rdma: receive failed: %s", ibv_wc_status_str(wc.status));
    }
    return;
  }
  if (wc.opcode == IBV_WC_RECV_RDMA_WITH_IMM) {
    OnWritesDone(ntohl(wc.imm_data));
    return;
  }
  HandleFrame(ConnByQp(wc.qp_num), slot.Slice(0, wc.byte_len), rdma::OriginOfQp(wc.qp_num));
}

void RdmaTransport::OnSendCompletion(Conn& c, uint64_t seq) {
  std::vector<std::vector<Buffer>> release;  // dropped after the lock
  absl::MutexLock lock(&c.mu);
  while (!c.held.empty() && c.held.front().first <= seq) {
    release.push_back(std::move(c.held.front().second));
    c.held.pop_front();
    --c.sq_used;
  }
  FlushLocked(c);
}

}  // namespace geops
