#include <catch2/catch.hpp>
#include <cstring>

#include "core/base/buffer.h"

using geops::Buffer;

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
