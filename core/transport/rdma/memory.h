// Registered memory for the rdma transport.
//
// Registration pins pages and costs a system call, so it is never done per
// work request, and in steady state not at all: receive slots, rendezvous
// targets and bounce copies come from size-class free lists of chunks
// registered once, a slab of them at a time (RegisteredPool), and a caller's Buffer is registered
// once over its owner's whole range, the registration living exactly as
// long as that owner (EnsureRegistered). Both count against one bound on
// pinned bytes, and every ibv_reg_mr is counted (Device::registrations,
// surfaced as TransportStats::registrations).
#pragma once

#include <infiniband/verbs.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "core/base/buffer.h"

namespace geops::rdma {

// Shared by the transport, the pool and every registration they hand out,
// so a Buffer that outlives the transport can still deregister safely. It
// owns the protection domain, which is deallocated after the last
// registration in it is gone (ibv_dealloc_pd fails while one is alive).
struct Device {
  Device() = default;
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;
  ~Device();

  ibv_pd* pd = nullptr;
  size_t limit_bytes = 0;
  std::atomic<size_t> registered_bytes{0};
  // ibv_reg_mr calls that succeeded. Points at the transport's stats; only
  // the transport registers, and only while it is alive.
  std::atomic<uint64_t>* registrations = nullptr;
};

// One registration of [addr, addr + length) in `dev`'s protection domain:
// what Buffer::registration() holds for the rdma transport.
struct MemoryRegion {
  const Device* dev = nullptr;
  uintptr_t addr = 0;
  size_t length = 0;
  uint32_t lkey = 0;
  uint32_t rkey = 0;
};

// The registration in `dev` covering all of `buf`, or nullptr.
const MemoryRegion* RegionOf(const Device& dev, const Buffer& buf);

// Registers [addr, addr + len) or explains why not (memlock, limit).
absl::StatusOr<ibv_mr*> RegisterRange(Device& dev, void* addr, size_t len);

class RegisteredPool {
 public:
  explicit RegisteredPool(std::shared_ptr<Device> dev) : state_(std::make_shared<State>()) {
    state_->dev = std::move(dev);
  }
  ~RegisteredPool();

  // A registered Buffer of at least `size` bytes (viewing exactly `size`).
  // It returns to the pool when its last view dies.
  absl::StatusOr<Buffer> Get(size_t size);

 private:
  // One registration holding chunks of one size class; deregistered and
  // freed when its last chunk (idle in the pool or out in a Buffer) dies.
  struct Slab {
    ~Slab();
    std::shared_ptr<Device> dev;  // null when registration failed
    void* base = nullptr;
    size_t bytes = 0;
    ibv_mr* mr = nullptr;
  };
  struct Chunk {
    std::byte* base = nullptr;
    size_t capacity = 0;
    std::shared_ptr<Slab> slab;
    // Made once per chunk and shared by every Buffer handed out from it.
    std::shared_ptr<const MemoryRegion> region;
  };
  struct State {
    std::shared_ptr<Device> dev;
    absl::Mutex mu;
    std::map<size_t, std::vector<Chunk>> free ABSL_GUARDED_BY(mu);  // by capacity
    bool closed ABSL_GUARDED_BY(mu) = false;
  };
  // A new slab of `chunks` chunks of `cap` bytes (0: as many as fit the
  // slab size).
  absl::StatusOr<std::shared_ptr<Slab>> NewSlab(size_t cap, size_t chunks = 0);
  static Chunk ChunkOf(const std::shared_ptr<Slab>& slab, size_t i, size_t cap);
  static void Release(const std::shared_ptr<State>& st, Chunk c);
  std::shared_ptr<State> state_;
};

// Makes `buf` usable as an RDMA source or target: returns the lkey/rkey of
// a registration covering it, registering its owner's whole range on first
// use and keeping that on the Buffer's owner.
absl::StatusOr<const MemoryRegion*> EnsureRegistered(const std::shared_ptr<Device>& dev,
                                                     const Buffer& buf);

}  // namespace geops::rdma
