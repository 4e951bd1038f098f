// What every Transport promises, as one suite: each transport's test file
// instantiates it with a factory (tcp and in-process on the host, rdma in
// the SoftRoCE VM). Properties a single transport adds (tcp's frame bound,
// CURVE, rdma's in-place writes) stay in that transport's own tests.
#pragma once

#include <atomic>
#include <catch2/catch.hpp>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/transport/transport.h"

namespace geops::testing {

// A data message of one key and one value segment of `bytes` bytes, whose
// byte i is (i * 7 + seed) % 251.
inline Message ContractMessage(int recipient, size_t bytes, int seed) {
  Message m;
  m.header.command = Command::kData;
  m.header.recipient = recipient;
  m.header.flags = msgflag::kRequest | msgflag::kPush;
  m.header.dtype = DType::kFloat32;
  m.header.timestamp = seed;
  m.header.key_count = 1;
  Key k = static_cast<Key>(seed);
  m.segments.push_back(Buffer::CopyOf(&k, sizeof(k)));
  Buffer v = Buffer::Allocate(bytes);
  for (size_t i = 0; i < bytes; ++i) v.data()[i] = std::byte((i * 7 + seed) % 251);
  m.segments.push_back(std::move(v));
  return m;
}

inline bool ContractIntact(const Message& m, size_t bytes, int seed) {
  if (m.segments.size() != 2 || m.segments[1].size() != bytes) return false;
  if (m.header.timestamp != seed) return false;
  for (size_t i = 0; i < bytes; ++i) {
    if (m.segments[1].data()[i] != std::byte((i * 7 + seed) % 251)) return false;
  }
  return true;
}

using TransportFactory = std::function<std::unique_ptr<Transport>()>;

// Runs the contract; `host` is an address the transports can listen on.
inline void TransportContract(const TransportFactory& make, const std::string& host) {
  auto a = make(), b = make(), c = make();
  auto port = b->Listen(host, 0);
  REQUIRE(port.ok());

  SECTION("messages of every size arrive intact and in order") {
    REQUIRE(a->Connect(2, host, *port).ok());
    // float32 values: whole elements, around ZeroMQ's 8 KiB read batch.
    const std::vector<size_t> sizes = {0, 4, 100, 4096, 8192, 8196, 65536, (1 << 20) + 4};
    int seed = 1;
    for (size_t s : sizes) REQUIRE(a->Send(ContractMessage(2, s, seed++)).ok());
    seed = 1;
    for (size_t s : sizes) {
      auto m = b->Receive(absl::Seconds(20));
      REQUIRE(m.ok());
      INFO("value of " << s << " bytes");
      REQUIRE(ContractIntact(*m, s, seed++));
      REQUIRE(m->origin != 0);
    }
    REQUIRE(a->stats().messages_sent == sizes.size());
    REQUIRE(b->stats().messages_received == sizes.size());
    REQUIRE(b->stats().malformed == 0);
  }

  SECTION("one sender keeps one origin, another sender gets another, aliases share a path") {
    REQUIRE(a->Connect(2, host, *port).ok());
    REQUIRE(a->Alias(5, 2).ok());
    REQUIRE(absl::IsNotFound(a->Alias(6, 99)));
    REQUIRE(c->Connect(2, host, *port).ok());
    REQUIRE(a->Send(ContractMessage(2, 8, 1)).ok());
    REQUIRE(a->Send(ContractMessage(5, 8, 2)).ok());
    REQUIRE(c->Send(ContractMessage(2, 8, 3)).ok());
    std::map<int, uint64_t> origin;  // by seed
    for (int i = 0; i < 3; ++i) {
      auto m = b->Receive(absl::Seconds(20));
      REQUIRE(m.ok());
      origin[m->header.timestamp] = m->origin;
    }
    REQUIRE(origin.size() == 3);
    REQUIRE(origin[1] == origin[2]);
    REQUIRE(origin[1] != origin[3]);
  }

  SECTION("unknown peers, a taken port, a quiet line and shutdown are reported as such") {
    REQUIRE(absl::IsNotFound(a->Send(ContractMessage(42, 8, 1))));
    REQUIRE_FALSE(c->Listen(host, *port).ok());
    auto quiet = b->Receive(absl::Milliseconds(100));
    REQUIRE(absl::IsDeadlineExceeded(quiet.status()));
    b->Shutdown();
    auto after = b->Receive(absl::Seconds(5));
    REQUIRE(absl::IsCancelled(after.status()));
  }

  SECTION("a sender's buffers are released once nobody needs them, never written") {
    REQUIRE(a->Connect(2, host, *port).ok());
    std::vector<std::byte> src(1 << 20, std::byte{0x3c});
    std::atomic<int> released{0};
    {
      Message m = ContractMessage(2, 0, 9);
      m.segments[1] = Buffer::Wrap(src.data(), src.size(), [&] { ++released; });
      REQUIRE(a->Send(m).ok());
    }
    auto m = b->Receive(absl::Seconds(20));
    REQUIRE(m.ok());
    REQUIRE(m->segments[1].size() == src.size());
    REQUIRE(std::memcmp(m->segments[1].data(), src.data(), src.size()) == 0);
    m = absl::CancelledError("dropped");  // an in-process receiver held the same Buffer
    for (int i = 0; i < 200 && released.load() == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    REQUIRE(released == 1);
    REQUIRE(src[12345] == std::byte{0x3c});
  }
}

}  // namespace geops::testing
