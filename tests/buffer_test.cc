#include <catch2/catch.hpp>
#include <cstring>

#include "core/base/buffer.h"
#include "core/base/buffer_pool.h"

using geops::Buffer;
using geops::BufferPool;

TEST_CASE("Buffer::Wrap views caller memory without copying and releases once") {
  int released = 0;
  char data[16] = "hello";
  {
    Buffer b = Buffer::Wrap(data, sizeof(data), [&] { ++released; });
    REQUIRE(b.data() == reinterpret_cast<std::byte*>(data));
    REQUIRE(b.size() == 16);
    Buffer copy = b;
    Buffer slice = b.Slice(1, 4);
    REQUIRE(slice.data() == reinterpret_cast<std::byte*>(data + 1));
    REQUIRE(slice.size() == 4);
    REQUIRE(b.use_count() == 3);
    b = Buffer();
    copy = Buffer();
    REQUIRE(released == 0);  // the slice still holds the owner
  }
  REQUIRE(released == 1);
}

TEST_CASE("Buffer::Slice clamps to the end instead of reading past it") {
  Buffer b = Buffer::Allocate(10);
  REQUIRE(b.Slice(8, 100).size() == 2);
  REQUIRE(b.Slice(50, 5).size() == 0);
  REQUIRE(b.Slice(10, 0).size() == 0);
}

TEST_CASE("Buffer::Allocate is zeroed and 64-byte aligned, and CopyOf copies") {
  Buffer b = Buffer::Allocate(1000);
  REQUIRE(reinterpret_cast<uintptr_t>(b.data()) % 64 == 0);
  for (size_t i = 0; i < b.size(); ++i) REQUIRE(b.data()[i] == std::byte{0});
  REQUIRE(b.aligned_for<double>());
  const char src[] = "abcdef";
  Buffer c = Buffer::CopyOf(src, 6);
  REQUIRE(c.data() != reinterpret_cast<const std::byte*>(src));
  REQUIRE(std::memcmp(c.data(), src, 6) == 0);
  REQUIRE(Buffer::Allocate(0).empty());
}

TEST_CASE("Buffer carries the registration of its owner to every view") {
  Buffer b = Buffer::Allocate(64);
  REQUIRE(b.registration() == nullptr);
  auto reg = std::make_shared<int>(7);
  b.set_registration(reg);
  Buffer s = b.Slice(8, 8);
  REQUIRE(s.registration() == reg);
  REQUIRE(*static_cast<const int*>(s.registration().get()) == 7);
}

TEST_CASE("Buffer::Whole recovers the owner's full range from a slice") {
  Buffer b = Buffer::Allocate(100);
  Buffer s = b.Slice(10, 5);
  Buffer w = s.Whole();
  REQUIRE(w.data() == b.data());
  REQUIRE(w.size() == 100);
  REQUIRE(Buffer().Whole().empty());
}

TEST_CASE("BufferPool recycles slots of a size class and bounds what it keeps") {
  // Classes waste at most a quarter, and are whole pages.
  for (size_t size : {size_t{1}, size_t{4097}, size_t{65536}, size_t{100000}, size_t{1} << 20,
                      (size_t{1} << 20) + 1, size_t{3} << 22}) {
    const size_t cls = BufferPool::ClassSize(size);
    REQUIRE(cls >= size);
    REQUIRE(cls % 4096 == 0);
    if (size > 4096) REQUIRE(cls <= size + size / 4 + 4096);
  }
  BufferPool pool(/*min_idle_bytes=*/size_t{4} << 20, /*max_idle_bytes=*/size_t{8} << 20);
  const std::byte* first;
  {
    Buffer a = pool.Get(1 << 20);
    REQUIRE(a.size() == 1 << 20);
    REQUIRE(a.aligned_for<double>());
    std::memset(a.data(), 1, a.size());
    first = a.data();
    REQUIRE(pool.stats().in_use_bytes == 1 << 20);
  }
  REQUIRE(pool.stats().idle_bytes == 1 << 20);
  {
    // Same class (1 MiB + 1 rounds to 1.25 MiB, another class): a miss.
    Buffer other = pool.Get((1 << 20) + 1);
    REQUIRE(other.data() != first);
    Buffer again = pool.Get(1000000);  // rounds to the 1 MiB class
    REQUIRE(again.data() == first);
  }
  auto st = pool.stats();
  REQUIRE(st.hits == 1);
  REQUIRE(st.misses == 2);
  REQUIRE(st.in_use_bytes == 0);

  // Twelve MiB lent at once: the working set raises the idle bound, up to
  // max_idle_bytes (8 MiB); the rest goes back to the C library.
  {
    std::vector<Buffer> many;
    for (int i = 0; i < 12; ++i) many.push_back(pool.Get(1 << 20));
  }
  st = pool.stats();
  REQUIRE(st.idle_bytes <= size_t{8} << 20);
  REQUIRE(st.freed >= 4);

  // A slot may outlive its pool.
  Buffer survivor = pool.Get(4096);
  { BufferPool doomed; survivor = doomed.Get(64 << 10); }
  std::memset(survivor.data(), 2, survivor.size());
}
