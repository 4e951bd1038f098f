#include "core/base/buffer.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

#if defined(__SANITIZE_ADDRESS__)
#define GEOPS_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define GEOPS_ASAN 1
#endif
#endif
#ifdef GEOPS_ASAN
#include <sanitizer/asan_interface.h>
#endif

namespace geops {

Buffer Buffer::Allocate(size_t size) {
  if (size == 0) return Buffer();
  size_t rounded = (size + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded);
  if (p == nullptr) throw std::bad_alloc();
  std::memset(p, 0, size);
#ifdef GEOPS_ASAN
  // The rounding is for the allocator's sake: under ASan a read or write
  // past `size` is reported like any heap overflow, not hidden in the pad.
  ASAN_POISON_MEMORY_REGION(static_cast<std::byte*>(p) + size, rounded - size);
#endif
  auto owner = std::make_shared<Owner>();
  owner->base = static_cast<std::byte*>(p);
  owner->size = size;
  owner->release = [p, rounded] {
#ifdef GEOPS_ASAN
    ASAN_UNPOISON_MEMORY_REGION(p, rounded);
#endif
    std::free(p);
  };
  return Buffer(std::move(owner), static_cast<std::byte*>(p), size);
}

Buffer Buffer::Wrap(void* data, size_t size, std::function<void()> release) {
  auto owner = std::make_shared<Owner>();
  owner->base = static_cast<std::byte*>(data);
  owner->size = size;
  owner->release = std::move(release);
  return Buffer(std::move(owner), static_cast<std::byte*>(data), size);
}

Buffer Buffer::CopyOf(const void* data, size_t size) {
  Buffer b = Allocate(size);
  if (size > 0) std::memcpy(b.data(), data, size);
  return b;
}

Buffer Buffer::Slice(size_t offset, size_t length) const {
  offset = std::min(offset, size_);
  length = std::min(length, size_ - offset);
  return Buffer(owner_, data_ + offset, length);
}

Buffer Buffer::Whole() const {
  if (!owner_) return Buffer();
  return Buffer(owner_, owner_->base, owner_->size);
}

const std::shared_ptr<const void>& Buffer::registration() const {
  static const std::shared_ptr<const void> kNone;
  return owner_ ? owner_->registration : kNone;
}

void Buffer::set_registration(std::shared_ptr<const void> registration) const {
  if (owner_) owner_->registration = std::move(registration);
}

}  // namespace geops
