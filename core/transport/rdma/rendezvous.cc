#include "core/transport/rdma/rendezvous.h"

namespace geops::rdma {

void Rendezvous::CountLocked() {
  expected_n_.store(expected_.size(), std::memory_order_release);
  adverts_n_.store(adverts_.size(), std::memory_order_release);
}

void Rendezvous::Expect(int peer, int timestamp, std::vector<Buffer> targets) {
  absl::MutexLock lock(&mu_);
  expected_[{peer, timestamp}] = std::move(targets);
  CountLocked();
}

std::optional<std::vector<Buffer>> Rendezvous::TakeExpected(int sender, int timestamp) {
  if (expected_n_.load(std::memory_order_acquire) == 0) return std::nullopt;
  absl::MutexLock lock(&mu_);
  auto it = expected_.find({sender, timestamp});
  if (it == expected_.end()) return std::nullopt;
  std::vector<Buffer> targets = std::move(it->second);
  expected_.erase(it);
  CountLocked();
  return targets;
}

void Rendezvous::ForgetExpected(int sender, int timestamp) {
  if (expected_n_.load(std::memory_order_acquire) == 0) return;
  absl::MutexLock lock(&mu_);
  if (expected_.erase({sender, timestamp}) > 0) CountLocked();
}

void Rendezvous::RememberAdverts(int sender, int timestamp, std::vector<Advert> adverts) {
  if (adverts.empty()) return;
  absl::MutexLock lock(&mu_);
  adverts_[{sender, timestamp}] = std::move(adverts);
  CountLocked();
}

Places Rendezvous::Plan(const Device* dev, const Message& msg) {
  Places out;
  if (expected_n_.load(std::memory_order_acquire) == 0 &&
      adverts_n_.load(std::memory_order_acquire) == 0) {
    return out;
  }
  const Key key{msg.header.recipient, msg.header.timestamp};
  absl::MutexLock lock(&mu_);
  // Our places for the recipient's answer, when every one is registered.
  if (auto it = expected_.find(key); it != expected_.end() && !it->second.empty()) {
    for (const Buffer& t : it->second) {
      const MemoryRegion* r = t.empty() || dev == nullptr ? nullptr : RegionOf(*dev, t);
      if (r == nullptr) {
        out.adverts.clear();
        break;
      }
      out.adverts.push_back({reinterpret_cast<uint64_t>(t.data()), t.size(), r->rkey, 0});
    }
  }
  if (auto it = adverts_.find(key); it != adverts_.end()) {
    std::vector<Advert> place = std::move(it->second);
    adverts_.erase(it);
    CountLocked();
    bool fits = place.size() + 1 == msg.segments.size() && PlacedFrameBytes(msg) <= placed_limit_;
    for (size_t i = 0; fits && i < place.size(); ++i) {
      fits = place[i].length == msg.segments[i + 1].size();
    }
    if (fits) out.place = std::move(place);
  }
  return out;
}

uint64_t Rendezvous::AddSend(std::shared_ptr<WriteJob> job) {
  absl::MutexLock lock(&mu_);
  uint64_t id = next_send_id_++;
  sends_[id] = std::move(job);
  return id;
}

std::shared_ptr<WriteJob> Rendezvous::TakeSend(uint64_t id) {
  absl::MutexLock lock(&mu_);
  auto it = sends_.find(id);
  if (it == sends_.end()) return nullptr;
  std::shared_ptr<WriteJob> job = std::move(it->second);
  sends_.erase(it);
  return job;
}

uint32_t Rendezvous::AddRecv(PendingRecv recv) {
  absl::MutexLock lock(&mu_);
  uint32_t token = next_token_++;
  if (next_token_ == 0) next_token_ = 1;  // 0 is no message's
  recvs_[token] = std::move(recv);
  return token;
}

std::optional<PendingRecv> Rendezvous::TakeRecv(uint32_t token) {
  absl::MutexLock lock(&mu_);
  auto it = recvs_.find(token);
  if (it == recvs_.end()) return std::nullopt;
  PendingRecv pr = std::move(it->second);
  recvs_.erase(it);
  return pr;
}

void Rendezvous::Clear() {
  absl::MutexLock lock(&mu_);
  recvs_.clear();
  sends_.clear();
  expected_.clear();
  adverts_.clear();
  CountLocked();
}

}  // namespace geops::rdma
