#include "core/transport/rdma/conn_table.h"

#include "absl/strings/str_format.h"

namespace geops::rdma {

ConnectionTable::ConnectionTable() {
  absl::MutexLock lock(&mu_);
  PublishLocked();
}

ConnectionTable::~ConnectionTable() { Clear(); }

Conn* ConnectionTable::Peer(int id) const {
  const Index* idx = index_.load(std::memory_order_acquire);
  auto it = idx->peers.find(id);
  return it == idx->peers.end() ? nullptr : it->second;
}

Conn* ConnectionTable::ByQp(uint32_t qp_num) const {
  const Index* idx = index_.load(std::memory_order_acquire);
  auto it = idx->by_qp.find(qp_num);
  return it == idx->by_qp.end() ? nullptr : it->second;
}

void ConnectionTable::PublishLocked() {
  published_.push_back(std::make_unique<const Index>(next_));
  index_.store(published_.back().get(), std::memory_order_release);
}

void ConnectionTable::Add(std::shared_ptr<Conn> c) {
  absl::MutexLock lock(&mu_);
  conns_.push_back(std::move(c));
}

bool ConnectionTable::AddPeer(std::shared_ptr<Conn> c) {
  absl::MutexLock lock(&mu_);
  auto it = next_.peers.find(c->peer);
  if (it != next_.peers.end() && it->second->host == c->host && it->second->port == c->port) {
    absl::MutexLock cl(&it->second->mu);
    if (it->second->state != Conn::State::kDown) return false;
  }
  next_.peers[c->peer] = c.get();
  conns_.push_back(std::move(c));
  PublishLocked();
  return true;
}

absl::Status ConnectionTable::Alias(int new_id, int existing_id) {
  absl::MutexLock lock(&mu_);
  auto it = next_.peers.find(existing_id);
  if (it == next_.peers.end()) {
    return absl::NotFoundError(absl::StrFormat("no connection to node %d", existing_id));
  }
  next_.peers[new_id] = it->second;
  PublishLocked();
  return absl::OkStatus();
}

void ConnectionTable::IndexQp(uint32_t qp_num, Conn* c) {
  absl::MutexLock lock(&mu_);
  next_.by_qp[qp_num] = c;
  PublishLocked();
}

void ConnectionTable::UnindexQp(uint32_t qp_num) {
  absl::MutexLock lock(&mu_);
  if (next_.by_qp.erase(qp_num) > 0) PublishLocked();
}

std::vector<std::shared_ptr<Conn>> ConnectionTable::All() const {
  absl::MutexLock lock(&mu_);
  return conns_;
}

void ConnectionTable::Clear() {
  std::vector<std::shared_ptr<Conn>> conns;
  {
    absl::MutexLock lock(&mu_);
    next_ = Index();
    PublishLocked();
    conns.swap(conns_);
  }
  conns.clear();  // destroys queue pairs and ids, outside the lock
}

}  // namespace geops::rdma
