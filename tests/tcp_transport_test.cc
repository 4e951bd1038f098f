#include <zmq.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstring>
#include <map>
#include <thread>

#include "core/wire/codec.h"
#include "core/transport/tcp_transport.h"

using namespace geops;

namespace {

Message Big(size_t bytes, Buffer payload) {
  Message m;
  m.header.command = Command::kData;
  m.header.recipient = 2;
  m.header.flags = msgflag::kRequest | msgflag::kPush;
  m.header.dtype = DType::kFloat32;
  m.header.key_count = 1;
  Key k = 77;
  m.segments.push_back(Buffer::CopyOf(&k, sizeof(k)));
  m.segments.push_back(std::move(payload));
  return m;
}

}  // namespace

TEST_CASE("tcp sends a 16 MiB segment in place and lands it in recycled receive memory") {
  TcpTransport a, b;
  auto port = b.Listen("127.0.0.1", 0);
  REQUIRE(port.ok());
  REQUIRE(a.Connect(2, "127.0.0.1", *port).ok());

  const size_t n = 16 << 20;
  std::vector<uint8_t> src(n);
  for (size_t i = 0; i < n; ++i) src[i] = static_cast<uint8_t>(i * 31 + 7);
  std::atomic<int> released{0};
  {
    Buffer wrapped = Buffer::Wrap(src.data(), n, [&] { released++; });
    REQUIRE(a.Send(Big(n, wrapped)).ok());
  }
  auto got = b.Receive(absl::Seconds(20));
  REQUIRE(got.ok());
  REQUIRE(got->segments.size() == 2);
  REQUIRE(got->segments[1].size() == n);
  REQUIRE(std::memcmp(got->segments[1].data(), src.data(), n) == 0);
  // ZeroMQ dropped our reference once the bytes left: the caller's memory
  // was sent in place, never duplicated.
  for (int i = 0; i < 100 && released.load() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  REQUIRE(released.load() == 1);
  REQUIRE(a.stats().bytes_copied == 0);
  REQUIRE(b.stats().bytes_received >= n);
  // The value was moved out of ZeroMQ's frame once, into a pool slot, and
  // the frame freed at once: of ZeroMQ's frames only the keys are lent.
  REQUIRE(b.stats().bytes_staged == n);
  REQUIRE(b.stats().bytes_copied == 0);
  REQUIRE(b.receive_bytes_lent() == sizeof(Key));
  REQUIRE(b.receive_pool().stats().misses == 1);
  const std::byte* slot = got->segments[1].data();

  // The next value of that size lands in the same, already faulted-in slot.
  got = absl::CancelledError("dropped");
  REQUIRE(b.receive_pool().stats().idle_bytes >= n);
  REQUIRE(a.Send(Big(n, Buffer::CopyOf(src.data(), n))).ok());
  got = b.Receive(absl::Seconds(20));
  REQUIRE(got.ok());
  REQUIRE(got->segments[1].data() == slot);
  REQUIRE(std::memcmp(got->segments[1].data(), src.data(), n) == 0);
  REQUIRE(b.receive_pool().stats().hits == 1);
  REQUIRE(b.receive_pool().stats().misses == 1);
}

TEST_CASE("tcp lends small frames without a copy") {
  TcpTransport a, b;
  auto port = b.Listen("127.0.0.1", 0);
  REQUIRE(port.ok());
  REQUIRE(a.Connect(2, "127.0.0.1", *port).ok());
  const size_t n = 4096;
  std::vector<uint8_t> src(n, 0x5a);
  REQUIRE(a.Send(Big(n, Buffer::CopyOf(src.data(), n))).ok());
  auto got = b.Receive(absl::Seconds(20));
  REQUIRE(got.ok());
  REQUIRE(std::memcmp(got->segments[1].data(), src.data(), n) == 0);
  REQUIRE(b.stats().bytes_staged == 0);
  // The frame itself is lent, exactly as long as our Buffer lives.
  REQUIRE(b.receive_bytes_lent() >= static_cast<int64_t>(n));
  got = absl::CancelledError("dropped");
  REQUIRE(b.receive_bytes_lent() == 0);
}

TEST_CASE("tcp lands announced values in the caller's buffers") {
  TcpTransport a, b;
  auto port = b.Listen("127.0.0.1", 0);
  REQUIRE(port.ok());
  REQUIRE(a.Connect(2, "127.0.0.1", *port).ok());
  const size_t n = 1 << 20;
  std::vector<uint8_t> src(n);
  for (size_t i = 0; i < n; ++i) src[i] = static_cast<uint8_t>(i * 13 + 1);
  auto send = [&](int ts, size_t bytes) {
    Message m = Big(bytes, Buffer::CopyOf(src.data(), bytes));
    m.header.sender = 1;
    m.header.timestamp = ts;
    REQUIRE(a.Send(m).ok());
    auto got = b.Receive(absl::Seconds(20));
    REQUIRE(got.ok());
    REQUIRE(std::memcmp(got->segments[1].data(), src.data(), bytes) == 0);
    return got->segments[1];
  };
  Buffer dest = Buffer::Allocate(n);
  REQUIRE(b.ExpectInto(1, 7, {Buffer(), dest}));
  // Another timestamp, or another sender, does not use the announcement.
  REQUIRE(send(8, n).data() != dest.data());
  REQUIRE(send(7, n).data() == dest.data());
  REQUIRE(std::memcmp(dest.data(), src.data(), n) == 0);
  // An announcement is used once; a value of another size never lands in it.
  REQUIRE(send(7, n).data() != dest.data());
  REQUIRE(b.ExpectInto(1, 9, {Buffer(), dest}));
  REQUIRE(send(9, n / 2).data() != dest.data());
  REQUIRE(b.stats().bytes_staged == 3 * n + n / 2);
}

TEST_CASE("tcp refuses to send, and cuts peers that announce, frames above the bound") {
  const size_t bound = 1 << 20;
  TcpTransport a(bound), b(bound);
  auto port = b.Listen("127.0.0.1", 0);
  REQUIRE(port.ok());
  REQUIRE(a.Connect(2, "127.0.0.1", *port).ok());
  auto refused = a.Send(Big(bound + 1, Buffer::Allocate(bound + 1)));
  REQUIRE(absl::IsInvalidArgument(refused));
  REQUIRE(std::string(refused.message()).find("GEOPS_MAX_MESSAGE_MB") != std::string::npos);

  // A raw peer (no bound of its own) sends an oversized frame: the receiver
  // drops the connection instead of buffering it, and keeps working.
  void* ctx = zmq_ctx_new();
  void* raw = zmq_socket(ctx, ZMQ_DEALER);
  std::string ep = "tcp://127.0.0.1:" + std::to_string(*port);
  REQUIRE(zmq_connect(raw, ep.c_str()) == 0);
  Message big = Big(4 * bound, Buffer::Allocate(4 * bound));
  Buffer h = wire::EncodeHeader(big);
  zmq_send(raw, h.data(), h.size(), ZMQ_SNDMORE);
  zmq_send(raw, big.segments[0].data(), big.segments[0].size(), ZMQ_SNDMORE);
  zmq_send(raw, big.segments[1].data(), big.segments[1].size(), 0);
  auto none = b.Receive(absl::Milliseconds(1500));
  REQUIRE(absl::IsDeadlineExceeded(none.status()));
  REQUIRE(b.receive_bytes_lent() == 0);

  REQUIRE(a.Send(Big(bound, Buffer::Allocate(bound))).ok());
  auto ok = b.Receive(absl::Seconds(5));
  REQUIRE(ok.ok());
  REQUIRE(ok->segments[1].size() == bound);
  REQUIRE(ok->origin != 0);
  zmq_close(raw);
  zmq_ctx_term(ctx);
}

TEST_CASE("tcp: one sender keeps one origin, other senders get others, aliases share a path") {
  TcpTransport a, b, c;
  auto port = c.Listen("127.0.0.1", 0);
  REQUIRE(port.ok());
  REQUIRE(a.Connect(2, "127.0.0.1", *port).ok());
  REQUIRE(a.Alias(5, 2).ok());
  REQUIRE(absl::IsNotFound(a.Alias(6, 99)));
  REQUIRE(b.Connect(2, "127.0.0.1", *port).ok());
  uint64_t origins[3];
  Message m1 = Big(8, Buffer::Allocate(8));
  REQUIRE(a.Send(m1).ok());
  Message m2 = Big(8, Buffer::Allocate(8));
  m2.header.recipient = 5;  // the alias: same connection
  REQUIRE(a.Send(m2).ok());
  REQUIRE(b.Send(Big(8, Buffer::Allocate(8))).ok());
  std::map<uint64_t, int> seen;
  for (auto& o : origins) {
    auto r = c.Receive(absl::Seconds(5));
    REQUIRE(r.ok());
    o = r->origin;
    seen[o]++;
  }
  REQUIRE(seen.size() == 2);  // a's two messages share one origin; b has its own
  for (auto [origin, count] : seen) REQUIRE((count == 1 || count == 2));
}

TEST_CASE("tcp counts, logs and drops malformed input, then keeps working") {
  TcpTransport b;
  auto port = b.Listen("127.0.0.1", 0);
  REQUIRE(port.ok());
  void* ctx = zmq_ctx_new();
  void* raw = zmq_socket(ctx, ZMQ_DEALER);
  std::string ep = "tcp://127.0.0.1:" + std::to_string(*port);
  REQUIRE(zmq_connect(raw, ep.c_str()) == 0);
  const char garbage[] = "this is not a geops header";
  zmq_send(raw, garbage, sizeof(garbage), 0);
  // A valid header whose segment table lies about the payload.
  Message lie = Big(8, Buffer::Allocate(8));
  Buffer h = wire::EncodeHeader(lie);
  zmq_send(raw, h.data(), h.size(), ZMQ_SNDMORE);
  zmq_send(raw, lie.segments[0].data(), lie.segments[0].size(), ZMQ_SNDMORE);
  zmq_send(raw, "1234", 4, 0);  // 4 bytes where 8 were announced

  auto r = b.Receive(absl::Milliseconds(1500));
  REQUIRE_FALSE(r.ok());
  REQUIRE(absl::IsDeadlineExceeded(r.status()));
  REQUIRE(b.stats().malformed == 2);

  TcpTransport a;
  REQUIRE(a.Connect(2, "127.0.0.1", *port).ok());
  REQUIRE(a.Send(Big(8, Buffer::Allocate(8))).ok());
  auto ok = b.Receive(absl::Seconds(5));
  REQUIRE(ok.ok());
  REQUIRE(ok->header.key_count == 1);
  zmq_close(raw);
  zmq_ctx_term(ctx);
}

TEST_CASE("tcp reports unknown peers, busy ports and shutdown clearly") {
  TcpTransport a;
  auto s = a.Send(Big(8, Buffer::Allocate(8)));
  REQUIRE(absl::IsNotFound(s));
  auto port = a.Listen("127.0.0.1", 0);
  REQUIRE(port.ok());
  TcpTransport b;
  auto busy = b.Listen("127.0.0.1", *port);
  REQUIRE_FALSE(busy.ok());
  REQUIRE(std::string(busy.status().message()).find("in use") != std::string::npos);
  std::thread stopper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    a.Shutdown();
  });
  auto r = a.Receive(absl::Seconds(30));
  stopper.join();
  REQUIRE(absl::IsCancelled(r.status()));
}

TEST_CASE("tcp CURVE: a client that knows the server key but not the cluster key is refused") {
  std::string dir = "/tmp/geops-curve-test-" + std::to_string(getpid());
  REQUIRE(system(("rm -rf " + dir + " && mkdir -p " + dir).c_str()) == 0);
  char pub[41], sec[41];
  REQUIRE(zmq_curve_keypair(pub, sec) == 0);
  CurveKeys cluster{pub, sec};
  auto server = TcpTransport::Create(1 << 20, cluster);
  REQUIRE(server.ok());
  auto port = (*server)->Listen("127.0.0.1", 0);
  REQUIRE(port.ok());

  // A member of the cluster gets through.
  auto member = TcpTransport::Create(1 << 20, cluster);
  REQUIRE(member.ok());
  REQUIRE((*member)->Connect(2, "127.0.0.1", *port).ok());
  REQUIRE((*member)->Send(Big(8, Buffer::Allocate(8))).ok());
  REQUIRE((*server)->Receive(absl::Seconds(5)).ok());

  // A stranger with its own key pair, who learnt the (public) server key.
  char spub[41], ssec[41];
  REQUIRE(zmq_curve_keypair(spub, ssec) == 0);
  void* ctx = zmq_ctx_new();
  void* raw = zmq_socket(ctx, ZMQ_DEALER);
  zmq_setsockopt(raw, ZMQ_CURVE_SERVERKEY, pub, 41);
  zmq_setsockopt(raw, ZMQ_CURVE_PUBLICKEY, spub, 41);
  zmq_setsockopt(raw, ZMQ_CURVE_SECRETKEY, ssec, 41);
  std::string ep = "tcp://127.0.0.1:" + std::to_string(*port);
  REQUIRE(zmq_connect(raw, ep.c_str()) == 0);
  Message m = Big(8, Buffer::Allocate(8));
  Buffer h = wire::EncodeHeader(m);
  zmq_send(raw, h.data(), h.size(), ZMQ_SNDMORE | ZMQ_DONTWAIT);
  zmq_send(raw, m.segments[0].data(), m.segments[0].size(), ZMQ_SNDMORE | ZMQ_DONTWAIT);
  zmq_send(raw, m.segments[1].data(), m.segments[1].size(), ZMQ_DONTWAIT);
  auto none = (*server)->Receive(absl::Milliseconds(1500));
  REQUIRE(absl::IsDeadlineExceeded(none.status()));
  REQUIRE((*server)->curve_refused() >= 1);
  int linger = 0;
  zmq_setsockopt(raw, ZMQ_LINGER, &linger, sizeof(linger));
  zmq_close(raw);
  zmq_ctx_term(ctx);

  // The refused side of our own transport learns why, by peer id.
  char opub[41], osec[41];
  REQUIRE(zmq_curve_keypair(opub, osec) == 0);
  auto outsider = TcpTransport::Create(1 << 20, CurveKeys{pub, osec});
  REQUIRE(outsider.ok());
  REQUIRE((*outsider)->Listen("127.0.0.1", 0).ok());
  REQUIRE((*outsider)->Connect(2, "127.0.0.1", *port).ok());
  std::string problem;
  for (int i = 0; i < 50 && problem.empty(); ++i) {
    (void)(*outsider)->Receive(absl::Milliseconds(100));  // reads the monitors
    problem = (*outsider)->PeerProblem(2);
  }
  INFO(problem);
  REQUIRE_FALSE(problem.empty());
  (void)system(("rm -rf " + dir).c_str());
}
