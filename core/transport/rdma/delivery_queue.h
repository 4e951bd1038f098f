// Messages the rdma transport has decoded and Receive() has not yet
// returned, oldest first. The poller pushes, receivers pop; a receiver
// that spins checks `size_` before it takes the lock, so an empty queue
// costs it a load, not a lock, per look.
#pragma once

#include <atomic>
#include <deque>
#include <optional>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/wire/message.h"

namespace geops::rdma {

class DeliveryQueue {
 public:
  void Push(Message m) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    q_.push_back(std::move(m));
    size_.store(q_.size(), std::memory_order_release);
    cv_.Signal();
  }

  // The oldest message, if any; never blocks.
  std::optional<Message> TryPop() ABSL_LOCKS_EXCLUDED(mu_) {
    if (size_.load(std::memory_order_acquire) == 0) return std::nullopt;
    absl::MutexLock lock(&mu_);
    if (q_.empty()) return std::nullopt;
    std::optional<Message> m(std::move(q_.front()));
    q_.pop_front();
    size_.store(q_.size(), std::memory_order_release);
    return m;
  }

  // Waits up to `timeout` for a message or `stopping`, without taking one.
  void Wait(absl::Duration timeout, const std::atomic<bool>& stopping) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    if (q_.empty() && !stopping.load()) cv_.WaitWithTimeout(&mu_, timeout);
  }

  // Wakes every waiter (shutdown).
  void WakeAll() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    cv_.SignalAll();
  }

  void Clear() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    q_.clear();
    size_.store(0, std::memory_order_release);
  }

 private:
  absl::Mutex mu_;  // a leaf: nothing is taken while it is held
  absl::CondVar cv_;
  std::deque<Message> q_ ABSL_GUARDED_BY(mu_);
  std::atomic<size_t> size_{0};
};

}  // namespace geops::rdma
