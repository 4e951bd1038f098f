// RAII owners for the verbs and rdma_cm handles the rdma transport holds.
// Each handle is released exactly once, in the reverse order of creation,
// by the unique_ptr that owns it. (Memory registrations are owned by the
// Buffers they cover: see memory.h.)
#pragma once

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#include <memory>

namespace geops::rdma {

struct EventChannelDeleter {
  void operator()(rdma_event_channel* c) const { rdma_destroy_event_channel(c); }
};
struct CmIdDeleter {
  void operator()(rdma_cm_id* id) const {
    if (id->qp) rdma_destroy_qp(id);
    rdma_destroy_id(id);
  }
};
struct CqDeleter {
  void operator()(ibv_cq* cq) const { ibv_destroy_cq(cq); }
};
struct CompChannelDeleter {
  void operator()(ibv_comp_channel* c) const { ibv_destroy_comp_channel(c); }
};
struct SrqDeleter {
  void operator()(ibv_srq* srq) const { ibv_destroy_srq(srq); }
};

using EventChannelPtr = std::unique_ptr<rdma_event_channel, EventChannelDeleter>;
using CmIdPtr = std::unique_ptr<rdma_cm_id, CmIdDeleter>;
using CqPtr = std::unique_ptr<ibv_cq, CqDeleter>;
using CompChannelPtr = std::unique_ptr<ibv_comp_channel, CompChannelDeleter>;
using SrqPtr = std::unique_ptr<ibv_srq, SrqDeleter>;

}  // namespace geops::rdma
