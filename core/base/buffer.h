// Buffer: a shared, immutable-size view of bytes with an owner.
//
// Every tensor byte in geops travels as a Buffer. A Buffer never copies on
// construction from caller memory (Wrap) or on Slice: it only shares the
// owner, whose release callback runs when the last view dies. That is what
// lets a ZeroMQ frame or an RDMA pool slot reach the application and lets a
// caller's tensor reach the wire without a user-space copy.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>

namespace geops {

class Buffer {
 public:
  Buffer() = default;

  // Fresh zero-filled storage, 64-byte aligned so that any dtype can be read
  // in place.
  static Buffer Allocate(size_t size);
  // Views caller memory without copying; `release` runs when the last view
  // is gone (nullptr: the caller keeps the memory alive itself).
  static Buffer Wrap(void* data, size_t size, std::function<void()> release = nullptr);
  static Buffer CopyOf(const void* data, size_t size);

  std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }

  // A sub-range sharing this Buffer's owner. Out-of-range requests are
  // clamped to the end, never read past it.
  Buffer Slice(size_t offset, size_t length) const;

  template <typename T>
  std::span<T> as() const {
    return {reinterpret_cast<T*>(data_), size_ / sizeof(T)};
  }

  // The whole range the owner holds (what a transport registers once and
  // reuses for every slice).
  Buffer Whole() const;

  // Number of live views of the underlying owner (0 for an empty Buffer).
  long use_count() const { return owner_.use_count(); }
  // True when the data pointer is aligned for T, i.e. as<T>() is safe.
  template <typename T>
  bool aligned_for() const {
    return reinterpret_cast<uintptr_t>(data_) % alignof(T) == 0;
  }

  // A transport's registration of the owner's range (RDMA), shared by every
  // view and released with the owner. Opaque here: only the transport that
  // set it knows its type; tcp never sets one.
  const std::shared_ptr<const void>& registration() const;
  void set_registration(std::shared_ptr<const void> registration) const;

 private:
  struct Owner {
    std::byte* base = nullptr;
    size_t size = 0;
    std::function<void()> release;
    std::shared_ptr<const void> registration;
    ~Owner() {
      if (release) release();
    }
  };
  Buffer(std::shared_ptr<Owner> owner, std::byte* data, size_t size)
      : owner_(std::move(owner)), data_(data), size_(size) {}

  std::shared_ptr<Owner> owner_;
  std::byte* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace geops
