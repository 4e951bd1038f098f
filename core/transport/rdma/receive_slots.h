// The slots of the rdma transport's shared receive queue: registered
// chunks of RdmaOptions::rdma_slot_bytes from the pool, posted with
// IBV_WR_RECV and kept (nearly) all posted. A consumed slot goes to the
// application inside its message and may be held a while, so its index
// gets a fresh chunk; indices are posted again in batches, one chained
// ibv_post_srq_recv per batch rather than one per message.
//
// No lock of its own: only the thread that polls the completion queue
// uses it, so Progress holds it under its poll lock (progress.h).
#pragma once

#include <infiniband/verbs.h>

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "core/base/buffer.h"
#include "core/transport/rdma/memory.h"

namespace geops::rdma {

// wr_id of a receive: the slot index with this bit set (sends carry a
// sequence number, which never reaches it).
constexpr uint64_t kRecvFlag = uint64_t{1} << 63;

class ReceiveSlots {
 public:
  // Posts nothing yet: PostFree does.
  ReceiveSlots(ibv_srq* srq, RegisteredPool* pool, const Device* dev, size_t slot_bytes,
               int depth);
  ReceiveSlots(const ReceiveSlots&) = delete;
  ReceiveSlots& operator=(const ReceiveSlots&) = delete;

  // Posts every free index, in chains.
  absl::Status PostFree();
  // The slot the receive `wr_id` filled (empty for an unknown index); its
  // index is posted again once a batch is free, or at once after a
  // failed receive (`failed`), whose queue may be draining.
  Buffer Take(uint64_t wr_id, bool failed);
  // Drops every slot (the queue is gone or going).
  void Clear();

 private:
  ibv_srq* const srq_;
  RegisteredPool* const pool_;
  const Device* const dev_;
  const size_t slot_bytes_;
  std::vector<Buffer> posted_;   // by index; empty: not posted
  std::vector<uint32_t> free_;   // indices to post again
};

}  // namespace geops::rdma
