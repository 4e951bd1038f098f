#include "core/transport/rdma/receive_slots.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_format.h"
#include "core/base/log.h"

namespace geops::rdma {

ReceiveSlots::ReceiveSlots(ibv_srq* srq, RegisteredPool* pool, const Device* dev,
                           size_t slot_bytes, int depth)
    : srq_(srq), pool_(pool), dev_(dev), slot_bytes_(slot_bytes), posted_(depth) {
  free_.reserve(depth);
  for (int i = depth - 1; i >= 0; --i) free_.push_back(static_cast<uint32_t>(i));
}

absl::Status ReceiveSlots::PostFree() {
  constexpr size_t kChain = 64;
  ibv_sge sges[kChain];
  ibv_recv_wr wrs[kChain];
  while (!free_.empty()) {
    size_t n = 0;
    for (; n < kChain && n < free_.size(); ++n) {
      uint32_t idx = free_[free_.size() - 1 - n];
      Buffer& slot = posted_[idx];
      if (slot.empty()) {
        auto b = pool_->Get(slot_bytes_);
        if (!b.ok()) {
          if (n == 0) return b.status();
          break;
        }
        slot = std::move(*b);
      }
      sges[n] = {reinterpret_cast<uintptr_t>(slot.data()), static_cast<uint32_t>(slot.size()),
                 RegionOf(*dev_, slot)->lkey};
      wrs[n] = {};
      wrs[n].wr_id = idx | kRecvFlag;
      wrs[n].sg_list = &sges[n];
      wrs[n].num_sge = 1;
      if (n > 0) wrs[n - 1].next = &wrs[n];
    }
    ibv_recv_wr* bad = nullptr;
    if (ibv_post_srq_recv(srq_, wrs, &bad) != 0) {
      // Whatever came before `bad` is posted.
      size_t posted = 0;
      for (ibv_recv_wr* w = wrs; w != bad && posted < n; w = w->next) ++posted;
      free_.resize(free_.size() - posted);
      return absl::UnavailableError(
          absl::StrFormat("rdma: ibv_post_srq_recv: %s", std::strerror(errno)));
    }
    free_.resize(free_.size() - n);
  }
  return absl::OkStatus();
}

Buffer ReceiveSlots::Take(uint64_t wr_id, bool failed) {
  Buffer slot;
  uint64_t idx = wr_id & ~kRecvFlag;
  if (idx < posted_.size()) {
    slot = std::move(posted_[idx]);
    posted_[idx] = Buffer();
    free_.push_back(static_cast<uint32_t>(idx));
  }
  size_t batch = std::clamp<size_t>(posted_.size() / 8, 1, 32);
  if (free_.size() >= batch || failed) {
    if (auto s = PostFree(); !s.ok()) log::Error("%s", s.message());
  }
  return slot;
}

void ReceiveSlots::Clear() {
  posted_.clear();
  free_.clear();
}

}  // namespace geops::rdma
