#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "bench/args.h"
#include "bench/net_util.h"
#include "bench/percentiles.h"
#include "bench/transport_bench.h"
#include "bench/transport_protocol.h"
#include "core/transport/transport.h"

namespace geops::bench {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// A stuck peer must end the run with an error, not hang a script.
constexpr absl::Duration kReplyTimeout = absl::Seconds(60);

struct SizeResult {
  uint64_t size = 0;
  double gbps = 0;          // streamed payload, one direction
  uint64_t streamed = 0;
  Percentiles half_rtt_us;  // ping-pong, one way = round trip / 2
};

class Client {
 public:
  Client(const ClientOptions& o, Transport& t)
      : o_(o), t_(t), proto_(kClientNodeId, kServerNodeId) {}

  absl::Status Connect() {
    std::string host = o_.host;
    if (host.empty()) {
      auto local = LocalAddressTowards(o_.server_host);
      if (!local.ok()) return local.status();
      host = *local;
    }
    auto port = t_.Listen(host, 0);
    if (!port.ok()) return port.status();
    if (auto s = t_.Connect(kServerNodeId, o_.server_host, o_.server_port); !s.ok()) return s;
    NodeInfo self;
    self.id = kClientNodeId;
    self.host = host;
    self.port = *port;
    if (auto s = t_.Send(proto_.Hello(self)); !s.ok()) return s;
    return Expect(Kind::kHello).status();
  }

  absl::StatusOr<SizeResult> Measure(const Buffer& payload) {
    SizeResult r;
    r.size = payload.size();
    if (o_.stream) {
      // A short untimed stream first: connection set-up, page faults and
      // (for rdma) first-touch registration stay out of the numbers.
      if (auto w = Stream(payload, 2 * AckEvery(), 1e9); !w.ok()) return w.status();
      auto s = Stream(payload, o_.iters, o_.seconds);
      if (!s.ok()) return s.status();
      r.streamed = s->first;
      r.gbps = s->first * payload.size() * 8.0 / s->second / 1e9;
    }
    if (o_.ping) {
      for (int i = 0; i < 3; ++i) {
        if (auto w = PingOnce(payload); !w.ok()) return w.status();
      }
      std::vector<double> samples;
      Clock::time_point t0 = Clock::now();
      while (static_cast<int64_t>(samples.size()) < o_.lat_iters &&
             (samples.empty() || Since(t0) < o_.seconds)) {
        auto rtt = PingOnce(payload);
        if (!rtt.ok()) return rtt.status();
        samples.push_back(*rtt * 1e6 / 2);
      }
      r.half_rtt_us = Summarize(std::move(samples));
    }
    return r;
  }

  absl::Status Bye() {
    if (auto s = t_.Send(proto_.Bye()); !s.ok()) return s;
    return Expect(Kind::kByeAck).status();
  }

 private:
  int64_t AckEvery() const { return std::max(1, o_.window / 4); }

  absl::StatusOr<Message> Expect(Kind kind) {
    auto m = t_.Receive(kReplyTimeout);
    if (!m.ok()) {
      if (absl::IsDeadlineExceeded(m.status())) {
        return absl::DeadlineExceededError(
            absl::StrFormat("the server %s:%d did not answer within %s", o_.server_host,
                            o_.server_port, absl::FormatDuration(kReplyTimeout)));
      }
      return m.status();
    }
    if (Protocol::Classify(*m) != kind) {
      return absl::DataLossError("unexpected reply: " + m->DebugString());
    }
    return m;
  }

  // Streams until `count` messages or `seconds` have passed (rounded up to
  // whole ack intervals); returns (messages, seconds to the last ack).
  absl::StatusOr<std::pair<int64_t, double>> Stream(const Buffer& payload, int64_t count,
                                                    double seconds) {
    const int64_t every = AckEvery();
    int64_t sent = 0, acked = 0;
    bool stopping = false;
    Clock::time_point t0 = Clock::now();
    while (!stopping || acked < sent) {
      if (!stopping && sent - acked < o_.window) {
        ++sent;
        if (auto s = t_.Send(proto_.Stream(payload, static_cast<int32_t>(sent), every)); !s.ok()) {
          return s;
        }
        stopping = sent % every == 0 && (sent >= count || Since(t0) >= seconds);
        continue;
      }
      auto ack = Expect(Kind::kAck);
      if (!ack.ok()) return ack.status();
      acked = std::max<int64_t>(acked, ack->header.timestamp);
    }
    return std::make_pair(sent, Since(t0));
  }

  // One round trip, in seconds.
  absl::StatusOr<double> PingOnce(const Buffer& payload) {
    int32_t seq = ++ping_seq_;
    Clock::time_point t0 = Clock::now();
    if (auto s = t_.Send(proto_.Ping(payload, seq)); !s.ok()) return s;
    auto pong = Expect(Kind::kPong);
    double rtt = Since(t0);
    if (!pong.ok()) return pong.status();
    if (pong->header.timestamp != seq || pong->segments.size() != 2 ||
        pong->segments[1].size() != payload.size()) {
      return absl::DataLossError("a pong that does not match its ping: " + pong->DebugString());
    }
    return rtt;
  }

  const ClientOptions& o_;
  Transport& t_;
  Protocol proto_;
  int32_t ping_seq_ = 0;
};

}  // namespace

absl::Status RunClient(const ClientOptions& o) {
  for (uint64_t s : o.sizes) {
    if (s % 4 != 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "--sizes: %d is not a multiple of 4 (payloads travel as float32 values)", s));
    }
  }
  auto made = OpenTransport(o.van);
  if (!made.ok()) return made.status();
  Transport& t = **made;
  Client c(o, t);
  if (auto s = c.Connect(); !s.ok()) return s;
  std::printf("geops-bench-transport: connected to %s:%d van=%s window=%d\n",
              o.server_host.c_str(), o.server_port, t.name(), o.window);
  std::fflush(stdout);

  // One payload for the whole run: every size is a view of it, so nothing
  // is allocated, copied or registered per message.
  Buffer payload = Buffer::Allocate(*std::max_element(o.sizes.begin(), o.sizes.end()));
  if (auto s = t.Register(payload); !s.ok()) return s;

  std::vector<SizeResult> results;
  for (uint64_t size : o.sizes) {
    auto r = c.Measure(payload.Slice(0, size));
    if (!r.ok()) return r.status();
    std::printf("size=%-6s stream: %6llu msgs %8.3f Gbit/s | ping-pong one-way: p50 %8.1f us "
                "p99 %8.1f us (%zu samples)\n",
                FormatBytes(size).c_str(), static_cast<unsigned long long>(r->streamed), r->gbps,
                r->half_rtt_us.p50, r->half_rtt_us.p99, r->half_rtt_us.count);
    std::fflush(stdout);
    results.push_back(*r);
  }
  if (auto s = c.Bye(); !s.ok()) return s;

  const SizeResult* report = &results.back();
  for (const auto& r : results) {
    if (r.size == o.report_size) report = &r;
  }
  const SizeResult& smallest = *std::min_element(
      results.begin(), results.end(), [](auto& a, auto& b) { return a.size < b.size; });
  std::vector<std::string> per_size;
  for (const auto& r : results) {
    per_size.push_back(absl::StrFormat("%d:%.4f:%.1f:%.1f", r.size, r.gbps, r.half_rtt_us.p50,
                                       r.half_rtt_us.p99));
  }
  // The one line scripts parse: key=value pairs; results= holds
  // size:goodput_gbps:lat_p50_us:lat_p99_us for every size.
  std::printf("geops-bench-transport van=%s window=%d size=%llu goodput_gbps=%.4f "
              "lat_bytes=%llu lat_p50_us=%.1f lat_p99_us=%.1f lat=half_rtt copied_bytes=%llu "
              "results=%s\n",
              t.name(), o.window, static_cast<unsigned long long>(report->size), report->gbps,
              static_cast<unsigned long long>(smallest.size), smallest.half_rtt_us.p50,
              smallest.half_rtt_us.p99,
              static_cast<unsigned long long>(t.stats().bytes_copied.load()),
              absl::StrJoin(per_size, ",").c_str());
  std::fflush(stdout);
  return absl::OkStatus();
}

}  // namespace geops::bench
