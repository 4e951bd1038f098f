// The rdma transport's connection table: every connection it ever made,
// the outgoing ones by peer id, and each by its queue pair number (the
// only thing a completion names).
//
// Lookups are on the per-message path (a Send finds its peer, a completion
// its queue pair), changes are not (a connect, a retry, an accept, an
// alias). So changes take mu_ and publish a fresh immutable Index; lookups
// read the published one with one acquire load and take no lock. A Conn
// never dies before the table (conns_ keeps every one ever made), and
// neither does an Index (retired ones are kept: readers hold no
// reference, and a table changes only as connections come and go, a few
// hundred bytes each time), so a pointer a lookup returns stays valid
// while the transport lives.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "core/transport/rdma/connection.h"

namespace geops::rdma {

class ConnectionTable {
 public:
  ConnectionTable();
  ~ConnectionTable();
  ConnectionTable(const ConnectionTable&) = delete;
  ConnectionTable& operator=(const ConnectionTable&) = delete;

  // Lock-free lookups; nullptr when there is none.
  Conn* Peer(int id) const;
  Conn* ByQp(uint32_t qp_num) const;

  // An incoming connection.
  void Add(std::shared_ptr<Conn> c) ABSL_LOCKS_EXCLUDED(mu_);
  // `c` becomes the send path to c->peer, unless one to the same address
  // is up or coming up: then false, and `c` is not kept.
  bool AddPeer(std::shared_ptr<Conn> c) ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status Alias(int new_id, int existing_id) ABSL_LOCKS_EXCLUDED(mu_);
  void IndexQp(uint32_t qp_num, Conn* c) ABSL_LOCKS_EXCLUDED(mu_);
  void UnindexQp(uint32_t qp_num) ABSL_LOCKS_EXCLUDED(mu_);

  // Every connection ever made, for the cm thread's retries and shutdown.
  std::vector<std::shared_ptr<Conn>> All() const ABSL_LOCKS_EXCLUDED(mu_);
  // Drops every connection (destroying queue pairs and ids); only when no
  // other thread uses the transport any more.
  void Clear() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Index {
    std::map<int, Conn*> peers;
    std::map<uint32_t, Conn*> by_qp;
  };
  void PublishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  std::vector<std::shared_ptr<Conn>> conns_ ABSL_GUARDED_BY(mu_);
  Index next_ ABSL_GUARDED_BY(mu_);  // what the next published Index holds
  std::vector<std::unique_ptr<const Index>> published_ ABSL_GUARDED_BY(mu_);
  std::atomic<const Index*> index_{nullptr};
};

}  // namespace geops::rdma
