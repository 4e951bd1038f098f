#include "core/transport/inproc_transport.h"

#include <atomic>

#include "absl/strings/str_format.h"
#include "core/base/log.h"
#include "core/wire/codec.h"

namespace geops {
namespace {

uint64_t NextOrigin() {
  static std::atomic<uint64_t> next{1};
  return (next.fetch_add(1) << 1) | 1;  // odd: never 0, "unknown"
}

}  // namespace

InProcTransport::InProcTransport(std::shared_ptr<InProcNetwork> network)
    : network_(std::move(network)), origin_(NextOrigin()) {}

InProcTransport::~InProcTransport() {
  Shutdown();
  std::lock_guard<std::mutex> lock(network_->mu_);
  if (port_ != 0) network_->listeners_.erase(port_);
}

absl::StatusOr<int> InProcTransport::Listen(const std::string& host, int port) {
  std::lock_guard<std::mutex> lock(network_->mu_);
  if (port_ != 0) return absl::FailedPreconditionError("already listening");
  if (port == 0) {
    while (network_->listeners_.count(network_->next_port_)) ++network_->next_port_;
    port = network_->next_port_++;
  } else if (network_->listeners_.count(port)) {
    return absl::UnavailableError(
        absl::StrFormat("cannot listen on %s:%d: the port is already in use", host, port));
  }
  port_ = port;
  network_->listeners_[port] = this;
  auto waiting = network_->waiting_.extract(port);
  if (!waiting.empty()) {
    for (auto& e : waiting.mapped()) DeliverLocked(std::move(e));
  }
  return port;
}

absl::Status InProcTransport::Connect(int peer_id, const std::string& host, int port) {
  std::lock_guard<std::mutex> lock(peers_mu_);
  peers_[peer_id] = port;
  return absl::OkStatus();
}

absl::Status InProcTransport::Alias(int new_id, int existing_id) {
  std::lock_guard<std::mutex> lock(peers_mu_);
  auto it = peers_.find(existing_id);
  if (it == peers_.end()) {
    return absl::NotFoundError(absl::StrFormat("no connection to node %d", existing_id));
  }
  peers_[new_id] = it->second;
  return absl::OkStatus();
}

absl::Status InProcTransport::Send(const Message& msg) {
  int port;
  {
    std::lock_guard<std::mutex> lock(peers_mu_);
    auto it = peers_.find(msg.header.recipient);
    if (it == peers_.end()) {
      return absl::NotFoundError(
          absl::StrFormat("no connection to node %d", msg.header.recipient));
    }
    port = it->second;
  }
  InProcNetwork::Envelope e{wire::EncodeHeader(msg), msg.segments, origin_};
  stats_.messages_sent.fetch_add(1, std::memory_order_relaxed);
  stats_.bytes_sent.fetch_add(e.header.size() + msg.payload_bytes(), std::memory_order_relaxed);
  std::lock_guard<std::mutex> lock(network_->mu_);
  auto to = network_->listeners_.find(port);
  if (to == network_->listeners_.end()) {
    network_->waiting_[port].push_back(std::move(e));
  } else {
    to->second->DeliverLocked(std::move(e));
  }
  return absl::OkStatus();
}

void InProcTransport::DeliverLocked(InProcNetwork::Envelope e) {
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    if (shutdown_) return;
    queue_.push_back(std::move(e));
  }
  queue_cv_.notify_one();
}

absl::StatusOr<Message> InProcTransport::Receive(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    InProcNetwork::Envelope e;
    {
      std::unique_lock<std::mutex> lock(queue_mu_);
      while (queue_.empty() && !shutdown_) {
        absl::Duration left = deadline - absl::Now();
        if (left <= absl::ZeroDuration()) return absl::DeadlineExceededError("no message");
        queue_cv_.wait_for(lock, absl::ToChronoNanoseconds(left));
      }
      if (shutdown_) return absl::CancelledError("transport shut down");
      e = std::move(queue_.front());
      queue_.pop_front();
    }
    size_t bytes = e.header.size();
    for (const auto& s : e.segments) bytes += s.size();
    stats_.bytes_received.fetch_add(bytes, std::memory_order_relaxed);
    auto msg = wire::Decode({e.header.data(), e.header.size()}, std::move(e.segments));
    if (!msg.ok()) {
      stats_.malformed.fetch_add(1, std::memory_order_relaxed);
      log::Warn("inproc: dropped a message: %s", msg.status().message());
      continue;
    }
    stats_.messages_received.fetch_add(1, std::memory_order_relaxed);
    msg->origin = e.origin;
    return msg;
  }
}

void InProcTransport::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    shutdown_ = true;
  }
  queue_cv_.notify_all();
}

}  // namespace geops
