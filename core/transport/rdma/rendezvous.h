// The rdma transport's rendezvous state, both directions, and what
// one-sided placement remembers (frames.h describes both protocols):
//
//   expected   where the message a peer will send with a timestamp must
//              land (ExpectInto); taken by the frame that brings it
//   adverts    where a peer asked its answer to land; taken by the Send
//              of that answer
//   sends      our RTSs waiting for their CTS, by rendezvous id
//   recvs      messages whose writes we await, by token (the immediate)
//
// A node that announces nothing and sends nothing large (every 64-byte
// ping-pong) never takes mu_: the empty checks are atomics kept with the
// maps. That is safe because an entry is added before the event that makes
// a reader look for it (ExpectInto before the Send of the request; an
// advert before the message carrying it is delivered).
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "core/transport/rdma/frames.h"
#include "core/transport/rdma/memory.h"
#include "core/wire/message.h"

namespace geops::rdma {

// A rendezvous send waiting for its CTS, then its writes.
struct WriteJob {
  Message msg;                     // segments are registered sources
  std::vector<CtsTarget> targets;  // filled from the CTS
};

// A message whose segments are being written into `targets`; the
// immediate of the last write completes it.
struct PendingRecv {
  Buffer header;  // the encoded wire header
  std::vector<Buffer> targets;
  uint64_t origin = 0;
};

// What a message to a peer carries besides itself (see Rendezvous::Plan).
struct Places {
  // Where the recipient's answer must land (from ExpectInto): travels in
  // this message's frame.
  std::vector<Advert> adverts;
  // Where the recipient asked this message to land; empty: it did not,
  // or the message does not fit (then it takes the rendezvous).
  std::vector<Advert> place;
};

class Rendezvous {
 public:
  // `placed_limit`: the largest kPlaced frame (a receive slot).
  explicit Rendezvous(size_t placed_limit) : placed_limit_(placed_limit) {}

  void Expect(int peer, int timestamp, std::vector<Buffer> targets) ABSL_LOCKS_EXCLUDED(mu_);
  // The targets announced for (sender, timestamp), taken; nullopt: none.
  std::optional<std::vector<Buffer>> TakeExpected(int sender, int timestamp)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Forgets what was announced for a message that came another way.
  void ForgetExpected(int sender, int timestamp) ABSL_LOCKS_EXCLUDED(mu_);

  void RememberAdverts(int sender, int timestamp, std::vector<Advert> adverts)
      ABSL_LOCKS_EXCLUDED(mu_);
  // What `msg` carries: our places for its answer (every target must be
  // registered in `dev`; none are without one), and the recipient's places
  // for it when every value segment has exactly its advertised length.
  Places Plan(const Device* dev, const Message& msg) ABSL_LOCKS_EXCLUDED(mu_);

  uint64_t AddSend(std::shared_ptr<WriteJob> job) ABSL_LOCKS_EXCLUDED(mu_);
  std::shared_ptr<WriteJob> TakeSend(uint64_t id) ABSL_LOCKS_EXCLUDED(mu_);
  // The token the writes of `recv` will carry.
  uint32_t AddRecv(PendingRecv recv) ABSL_LOCKS_EXCLUDED(mu_);
  std::optional<PendingRecv> TakeRecv(uint32_t token) ABSL_LOCKS_EXCLUDED(mu_);

  void Clear() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  using Key = std::pair<int, int>;  // (peer, timestamp)
  void CountLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const size_t placed_limit_;
  absl::Mutex mu_;
  std::map<Key, std::vector<Buffer>> expected_ ABSL_GUARDED_BY(mu_);
  std::map<Key, std::vector<Advert>> adverts_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, std::shared_ptr<WriteJob>> sends_ ABSL_GUARDED_BY(mu_);
  uint64_t next_send_id_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<uint32_t, PendingRecv> recvs_ ABSL_GUARDED_BY(mu_);
  uint32_t next_token_ ABSL_GUARDED_BY(mu_) = 1;
  // expected_.size() and adverts_.size(), written under mu_, read without.
  std::atomic<size_t> expected_n_{0};
  std::atomic<size_t> adverts_n_{0};
};

}  // namespace geops::rdma
