// BufferPool: memory that is kept and handed out again instead of going back
// to the C library.
//
// A receive path that gets fresh memory for every large value pays a page
// fault per 4 KiB touched: the C library returns big freed blocks to the
// kernel (trimming, munmap) and the next allocation faults them in again,
// zero-filled. A pool slot is touched once and then recycled while warm.
//
// Slots come in size classes (whole pages, four per power of two, so a
// slot wastes at most a quarter of its size or a page) and are 64-byte
// aligned. Get() never zero-fills: callers overwrite the whole value.
// Released slots stay idle up to the larger of `min_idle_bytes` and the
// most bytes ever in use at once (the working set the program already
// needed), never above `max_idle_bytes`; beyond that they are freed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "core/base/buffer.h"

namespace geops {

class BufferPool {
 public:
  explicit BufferPool(size_t min_idle_bytes = size_t{64} << 20,
                      size_t max_idle_bytes = size_t{1} << 30);
  ~BufferPool();
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

  // `size` bytes of uninitialised storage. The slot returns to the pool
  // when the last view of it dies, even after the pool itself is gone.
  Buffer Get(size_t size);

  struct Stats {
    uint64_t hits = 0;        // Get() served by an idle slot
    uint64_t misses = 0;      // Get() that allocated
    uint64_t freed = 0;       // slots released beyond the idle bound
    size_t idle_bytes = 0;    // held for reuse right now
    size_t in_use_bytes = 0;  // lent out right now
  };
  Stats stats() const;

  // The slot size Get(size) uses.
  static size_t ClassSize(size_t size);

 private:
  struct State;  // shared with every lent slot
  std::shared_ptr<State> state_;
};

}  // namespace geops
