#include <cstdio>

#include "absl/strings/str_format.h"
#include "bench/transport_bench.h"
#include "bench/transport_protocol.h"
#include "core/transport/transport.h"

namespace geops::bench {

absl::Status RunServer(const ServerOptions& o) {
  auto made = OpenTransport(o.van);
  if (!made.ok()) return made.status();
  Transport& t = **made;
  auto port = t.Listen(o.host, o.port);
  if (!port.ok()) return port.status();
  // Scripts wait for this line rather than sleeping.
  std::printf("geops-bench-transport: listening on %s:%d van=%s\n", o.host.c_str(), *port,
              t.name());
  std::fflush(stdout);

  Protocol proto(kServerNodeId, kClientNodeId);
  bool connected = false;
  uint64_t streamed = 0, pings = 0, payload_bytes = 0;
  absl::Duration idle = absl::Seconds(connected ? o.idle_timeout_s : o.hello_timeout_s);
  for (;;) {
    auto m = t.Receive(idle);
    if (!m.ok()) {
      if (absl::IsDeadlineExceeded(m.status())) {
        return absl::DeadlineExceededError(
            connected ? absl::StrFormat("the client went silent for %gs", o.idle_timeout_s)
                      : absl::StrFormat("no client came within %gs", o.hello_timeout_s));
      }
      return m.status();
    }
    switch (Protocol::Classify(*m)) {
      case Kind::kHello: {
        auto peer = DecodeNodeInfo(m->segments[0]);
        if (!peer.ok()) return peer.status();
        if (auto s = t.Connect(kClientNodeId, peer->host, peer->port); !s.ok()) return s;
        NodeInfo self;
        self.id = kServerNodeId;
        self.host = o.host;
        self.port = *port;
        if (auto s = t.Send(proto.Hello(self)); !s.ok()) return s;
        connected = true;
        idle = absl::Seconds(o.idle_timeout_s);
        std::printf("geops-bench-transport: client %s:%d connected\n", peer->host.c_str(),
                    peer->port);
        std::fflush(stdout);
        break;
      }
      case Kind::kStream: {
        ++streamed;
        payload_bytes += m->segments[1].size();
        uint64_t every = m->header.round == 0 ? 1 : m->header.round;
        if (static_cast<uint64_t>(m->header.timestamp) % every == 0) {
          if (auto s = t.Send(proto.Ack(m->header.timestamp)); !s.ok()) return s;
        }
        break;
      }
      case Kind::kPing:
        ++pings;
        payload_bytes += m->segments[1].size();
        if (auto s = t.Send(proto.Pong(*m)); !s.ok()) return s;
        break;
      case Kind::kBye: {
        if (auto s = t.Send(proto.ByeAck()); !s.ok()) return s;
        const TransportStats& st = t.stats();
        std::printf("geops-bench-transport-server van=%s streamed=%llu pings=%llu "
                    "payload_bytes=%llu malformed=%llu copied_bytes=%llu\n",
                    t.name(), static_cast<unsigned long long>(streamed),
                    static_cast<unsigned long long>(pings),
                    static_cast<unsigned long long>(payload_bytes),
                    static_cast<unsigned long long>(st.malformed.load()),
                    static_cast<unsigned long long>(st.bytes_copied.load()));
        std::fflush(stdout);
        return absl::OkStatus();
      }
      default:
        return absl::DataLossError("unexpected message: " + m->DebugString());
    }
  }
}

}  // namespace geops::bench
