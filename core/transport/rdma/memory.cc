#include "core/transport/rdma/memory.h"

#include <sys/resource.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_format.h"

namespace geops::rdma {
namespace {

constexpr size_t kMinChunk = 16 * 1024;
// Small chunks are registered in slabs of about this size, one
// registration each (512 receive slots: 8 registrations, not 512).
constexpr size_t kSlabBytes = size_t{1} << 20;

size_t SizeClass(size_t n) {
  size_t c = kMinChunk;
  while (c < n) c <<= 1;
  return c;
}

std::string MemlockHint() {
  rlimit rl{};
  getrlimit(RLIMIT_MEMLOCK, &rl);
  std::string limit = rl.rlim_cur == RLIM_INFINITY ? "unlimited"
                                                   : absl::StrFormat("%d KiB", rl.rlim_cur / 1024);
  return absl::StrFormat(
      "the locked-memory limit is %s: raise it (`ulimit -l unlimited`, or `--ulimit "
      "memlock=-1` for a container)",
      limit);
}

}  // namespace

Device::~Device() {
  if (pd != nullptr) ibv_dealloc_pd(pd);
}

absl::StatusOr<ibv_mr*> RegisterRange(Device& dev, void* addr, size_t len) {
  if (dev.registered_bytes.load() + len > dev.limit_bytes) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "rdma: registering %d more bytes would pass GEOPS_RDMA_MEM_LIMIT (%d bytes, %d in use)",
        len, dev.limit_bytes, dev.registered_bytes.load()));
  }
  ibv_mr* mr = ibv_reg_mr(dev.pd, addr, len,
                          IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
  if (mr != nullptr && dev.registrations != nullptr) {
    dev.registrations->fetch_add(1, std::memory_order_relaxed);
  }
  if (mr == nullptr) {
    int err = errno;
    if (err == ENOMEM || err == EPERM || err == EAGAIN) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "rdma: ibv_reg_mr of %d bytes failed (%s); %s", len, std::strerror(err),
          MemlockHint()));
    }
    return absl::InternalError(
        absl::StrFormat("rdma: ibv_reg_mr of %d bytes failed: %s", len, std::strerror(err)));
  }
  dev.registered_bytes.fetch_add(len);
  return mr;
}

const MemoryRegion* RegionOf(const Device& dev, const Buffer& buf) {
  auto* r = static_cast<const MemoryRegion*>(buf.registration().get());
  uintptr_t a = reinterpret_cast<uintptr_t>(buf.data());
  if (r == nullptr || r->dev != &dev || a < r->addr || a + buf.size() > r->addr + r->length) {
    return nullptr;
  }
  return r;
}

RegisteredPool::Slab::~Slab() {
  if (dev == nullptr) return;
  dev->registered_bytes.fetch_sub(bytes);
  ibv_dereg_mr(mr);
  std::free(base);
}

RegisteredPool::~RegisteredPool() {
  absl::MutexLock lock(&state_->mu);
  state_->closed = true;
  state_->free.clear();  // slabs whose chunks are all idle go now, the rest with their last
}

void RegisteredPool::Release(const std::shared_ptr<State>& st, Chunk c) {
  absl::MutexLock lock(&st->mu);
  if (!st->closed) st->free[c.capacity].push_back(std::move(c));
}

absl::StatusOr<Buffer> RegisteredPool::Get(size_t size) {
  const size_t cap = SizeClass(std::max<size_t>(size, 1));
  Chunk c;
  {
    absl::MutexLock lock(&state_->mu);
    auto& list = state_->free[cap];
    if (!list.empty()) {
      c = std::move(list.back());
      list.pop_back();
    } else {
      auto slab = NewSlab(cap);
      if (!slab.ok() && absl::IsResourceExhausted(slab.status())) {
        // Give idle chunks back (slabs all of whose chunks are idle are
        // deregistered) and try once more, one chunk only.
        state_->free.clear();
        slab = NewSlab(cap, /*chunks=*/1);
      }
      if (!slab.ok()) return slab.status();
      const size_t n = (*slab)->bytes / cap;
      auto& same = state_->free[cap];
      for (size_t i = 1; i < n; ++i) same.push_back(ChunkOf(*slab, i, cap));
      c = ChunkOf(*slab, 0, cap);
    }
  }
  std::shared_ptr<const void> region = c.region;
  std::byte* base = c.base;
  std::weak_ptr<State> weak = state_;
  Buffer b = Buffer::Wrap(base, size, [weak, c = std::move(c)]() mutable {
    if (auto st = weak.lock()) Release(st, std::move(c));
  });
  b.set_registration(std::move(region));
  return b;
}

absl::StatusOr<std::shared_ptr<RegisteredPool::Slab>> RegisteredPool::NewSlab(size_t cap,
                                                                              size_t chunks) {
  if (chunks == 0) chunks = std::clamp<size_t>(kSlabBytes / cap, 1, 64);
  auto slab = std::make_shared<Slab>();
  slab->dev = state_->dev;
  slab->bytes = cap * chunks;
  slab->base = std::aligned_alloc(4096, slab->bytes);
  if (slab->base == nullptr) return absl::ResourceExhaustedError("rdma: out of memory");
  auto mr = RegisterRange(*state_->dev, slab->base, slab->bytes);
  if (!mr.ok()) {
    std::free(slab->base);
    slab->base = nullptr;
    slab->bytes = 0;
    slab->mr = nullptr;
    // ~Slab must not deregister what never was.
    slab->dev = nullptr;
    return mr.status();
  }
  slab->mr = *mr;
  return slab;
}

RegisteredPool::Chunk RegisteredPool::ChunkOf(const std::shared_ptr<Slab>& slab, size_t i,
                                              size_t cap) {
  Chunk c;
  c.base = static_cast<std::byte*>(slab->base) + i * cap;
  c.capacity = cap;
  c.slab = slab;
  c.region = std::make_shared<const MemoryRegion>(
      MemoryRegion{slab->dev.get(), reinterpret_cast<uintptr_t>(c.base), cap, slab->mr->lkey,
                   slab->mr->rkey});
  return c;
}

absl::StatusOr<const MemoryRegion*> EnsureRegistered(const std::shared_ptr<Device>& dev,
                                                     const Buffer& buf) {
  if (const MemoryRegion* r = RegionOf(*dev, buf)) return r;
  Buffer whole = buf.Whole();
  auto mr = RegisterRange(*dev, whole.data(), whole.size());
  if (!mr.ok()) return mr.status();
  // The registration lives as long as the Buffer's owner: freed memory is
  // never left registered, and a reused address is never matched to a
  // stale registration.
  ibv_mr* raw = *mr;
  std::shared_ptr<const MemoryRegion> region(
      new MemoryRegion{dev.get(), reinterpret_cast<uintptr_t>(whole.data()), whole.size(),
                       raw->lkey, raw->rkey},
      [dev, raw](const MemoryRegion* r) {
        dev->registered_bytes.fetch_sub(raw->length);
        ibv_dereg_mr(raw);
        delete r;
      });
  const MemoryRegion* out = region.get();
  buf.set_registration(std::move(region));
  return out;
}

}  // namespace geops::rdma
