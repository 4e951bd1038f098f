#include "transport/rdma/memory.h"

#include <sys/resource.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_format.h"

namespace geops::rdma {
namespace {

constexpr size_t kMinChunk = 16 * 1024;

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

RegisteredPool::~RegisteredPool() {
  absl::MutexLock lock(&state_->mu);
  state_->closed = true;
  for (auto& [cap, chunks] : state_->free) {
    for (auto& c : chunks) Destroy(*state_->dev, c);
  }
  state_->free.clear();
}

void RegisteredPool::Destroy(Device& dev, Chunk& c) {
  dev.registered_bytes.fetch_sub(c.capacity);
  ibv_dereg_mr(c.mr);
  std::free(c.base);
}

void RegisteredPool::Release(const std::shared_ptr<State>& st, Chunk c) {
  absl::MutexLock lock(&st->mu);
  if (st->closed) {
    Destroy(*st->dev, c);
    return;
  }
  st->free[c.capacity].push_back(c);
}

absl::StatusOr<Buffer> RegisteredPool::Get(size_t size) {
  size_t cap = SizeClass(std::max<size_t>(size, 1));
  Chunk c;
  {
    absl::MutexLock lock(&state_->mu);
    auto& list = state_->free[cap];
    if (!list.empty()) {
      c = list.back();
      list.pop_back();
    } else if (state_->dev->registered_bytes.load() + cap > state_->dev->limit_bytes) {
      // Give idle chunks of other sizes back before refusing.
      for (auto& [other, chunks] : state_->free) {
        for (auto& ch : chunks) Destroy(*state_->dev, ch);
        chunks.clear();
      }
    }
  }
  if (c.base == nullptr) {
    c.capacity = cap;
    c.base = std::aligned_alloc(4096, cap);
    if (c.base == nullptr) return absl::ResourceExhaustedError("rdma: out of memory");
    auto mr = RegisterRange(*state_->dev, c.base, cap);
    if (!mr.ok()) {
      std::free(c.base);
      return mr.status();
    }
    c.mr = *mr;
    c.region = std::make_shared<const MemoryRegion>(MemoryRegion{
        state_->dev.get(), reinterpret_cast<uintptr_t>(c.base), c.capacity, c.mr->lkey,
        c.mr->rkey});
  }
  std::shared_ptr<const void> region = c.region;
  std::weak_ptr<State> weak = state_;
  Buffer b = Buffer::Wrap(c.base, size, [weak, dev = state_->dev, c]() mutable {
    if (auto st = weak.lock()) {
      Release(st, c);
    } else {
      Destroy(*dev, c);
    }
  });
  b.set_registration(std::move(region));
  return b;
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
