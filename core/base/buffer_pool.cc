#include "core/base/buffer_pool.h"

#include <algorithm>
#include <bit>
#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define GEOPS_POOL_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define GEOPS_POOL_ASAN 1
#endif
#endif
#ifdef GEOPS_POOL_ASAN
#include <sanitizer/asan_interface.h>
#define GEOPS_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define GEOPS_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define GEOPS_POISON(p, n) ((void)(p), (void)(n))
#define GEOPS_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

namespace geops {

struct BufferPool::State {
  std::mutex mu;
  std::map<size_t, std::vector<void*>> idle;  // by class size
  size_t min_idle = 0;
  size_t max_idle = 0;
  size_t idle_bytes = 0;
  size_t in_use = 0;
  size_t peak_in_use = 0;
  uint64_t hits = 0, misses = 0, freed = 0;

  ~State() {
    for (auto& [size, slots] : idle) {
      for (void* p : slots) {
        GEOPS_UNPOISON(p, size);
        std::free(p);
      }
    }
  }

  void Release(void* p, size_t size) {
    {
      std::lock_guard<std::mutex> lock(mu);
      in_use -= size;
      const size_t bound = std::min(max_idle, std::max(min_idle, peak_in_use));
      if (idle_bytes + size <= bound) {
        // An idle slot is out of bounds to everyone: under ASan a use after
        // the last view died is reported, as it would be after free().
        GEOPS_POISON(p, size);
        idle[size].push_back(p);
        idle_bytes += size;
        return;
      }
      ++freed;
    }
    std::free(p);
  }
};

BufferPool::BufferPool(size_t min_idle_bytes, size_t max_idle_bytes)
    : state_(std::make_shared<State>()) {
  state_->min_idle = min_idle_bytes;
  state_->max_idle = std::max(min_idle_bytes, max_idle_bytes);
}

BufferPool::~BufferPool() = default;

size_t BufferPool::ClassSize(size_t size) {
  if (size <= 4096) return 4096;
  // Four classes per power of two (2^k, 1.25, 1.5, 1.75 x 2^k), whole pages.
  const size_t top = std::bit_floor(size);
  const size_t step = std::max<size_t>(top / 4, 4096);
  return (size + step - 1) / step * step;
}

Buffer BufferPool::Get(size_t size) {
  if (size == 0) return Buffer();
  const size_t cls = ClassSize(size);
  void* p = nullptr;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    auto it = state_->idle.find(cls);
    if (it != state_->idle.end() && !it->second.empty()) {
      p = it->second.back();
      it->second.pop_back();
      state_->idle_bytes -= cls;
      ++state_->hits;
    } else {
      ++state_->misses;
    }
    state_->in_use += cls;
    state_->peak_in_use = std::max(state_->peak_in_use, state_->in_use);
  }
  if (p == nullptr) {
    p = std::aligned_alloc(64, cls);
    if (p == nullptr) {
      std::lock_guard<std::mutex> lock(state_->mu);
      state_->in_use -= cls;
      throw std::bad_alloc();
    }
  } else {
    GEOPS_UNPOISON(p, cls);
  }
  // Past `size` stays out of bounds, as with Buffer::Allocate.
  GEOPS_POISON(static_cast<std::byte*>(p) + size, cls - size);
  return Buffer::Wrap(p, size, [state = state_, p, cls] {
    GEOPS_UNPOISON(p, cls);
    state->Release(p, cls);
  });
}

BufferPool::Stats BufferPool::stats() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  Stats s;
  s.hits = state_->hits;
  s.misses = state_->misses;
  s.freed = state_->freed;
  s.idle_bytes = state_->idle_bytes;
  s.in_use_bytes = state_->in_use;
  return s;
}

}  // namespace geops
