// geops-bench-transport: streaming goodput and ping-pong latency of one
// geops Transport (tcp or rdma) between two processes, over a sweep of
// message sizes. See kUsage.
#include <csignal>
#include <cstdio>
#include <string>
#include <vector>

#include "bench/args.h"
#include "bench/net_util.h"
#include "bench/transport_bench.h"

namespace {

const char kUsage[] = R"(usage:
  geops-bench-transport --role server [--van tcp|rdma] [--host IP] [--port N]
  geops-bench-transport --role client --connect IP:PORT [--van tcp|rdma] [options]

Two processes over the geops Transport interface. The server serves one
client and exits; the client sweeps message sizes and, per size, measures
  stream:    goodput (Gbit/s of payload) with --window messages in flight; the
             server acks every window/4 messages, which is the flow control
  ping-pong: latency, reported one way (half the round trip), as perftest's
             ib_send_lat does
and ends with one line:
  geops-bench-transport van=.. window=.. size=.. goodput_gbps=.. lat_bytes=..
    lat_p50_us=.. lat_p99_us=.. lat=half_rtt copied_bytes=.. results=SIZE:GBPS:P50:P99,...

server options
  --host IP           address to listen on (default 127.0.0.1)
  --port N            port (default 0: ephemeral; the chosen one is printed)
  --wait S            give up when no client comes within S seconds (300)
client options
  --connect IP:PORT   the server
  --host IP           address the client listens on for replies (default: the
                      local address that routes to the server)
  --sizes LIST        payload sizes, multiples of 4 (default 64,256,1K,...,16M)
  --iters N           streamed messages per size, at most (default 1000)
  --lat-iters N       ping-pongs per size, at most (default 1000)
  --seconds S         time per size and phase, at most (default 2)
  --window N          messages in flight while streaming (default 16)
  --no-stream / --no-ping   skip a phase
  --report-size B     the size named in the summary (default 1MiB)
both
  --van tcp|rdma      transport (default tcp)
)";

std::vector<uint64_t> DefaultSizes() {
  std::vector<uint64_t> s;
  for (uint64_t b = 64; b <= (16u << 20); b *= 4) s.push_back(b);
  return s;
}

absl::Status Main(const std::vector<std::string>& argv) {
  using namespace geops::bench;
  auto args = Args::Parse(argv, {"help", "no-stream", "no-ping"});
  if (!args.ok()) return args.status();
  if (args->Has("help")) {
    std::fputs(kUsage, stdout);
    return absl::OkStatus();
  }
  std::string role = args->Str("role", "");
  std::string van_name = args->Str("van", "tcp");
  geops::VanType van;
  if (van_name == "tcp") van = geops::VanType::kTcp;
  else if (van_name == "rdma") van = geops::VanType::kRdma;
  else return absl::InvalidArgumentError("--van \"" + van_name + "\": expected tcp or rdma");

  if (role == "server") {
    ServerOptions o;
    o.van = van;
    o.host = args->Str("host", o.host);
    auto port = args->Int("port", 0, 0, 65535);
    auto wait = args->Seconds("wait", o.hello_timeout_s);
    for (auto* s : {&port.status(), &wait.status()}) {
      if (!s->ok()) return *s;
    }
    o.port = static_cast<int>(*port);
    o.hello_timeout_s = *wait;
    if (auto s = args->CheckAllUsed(); !s.ok()) return s;
    return RunServer(o);
  }
  if (role != "client") {
    return absl::InvalidArgumentError("--role \"" + role + "\": expected server or client");
  }
  ClientOptions o;
  o.van = van;
  if (auto s = SplitHostPort(args->Str("connect", ""), &o.server_host, &o.server_port); !s.ok()) {
    return absl::InvalidArgumentError(std::string("--connect: ") + std::string(s.message()));
  }
  o.host = args->Str("host", "");
  auto sizes = args->Sizes("sizes", DefaultSizes());
  auto iters = args->Int("iters", o.iters, 1, 1 << 30);
  auto lat_iters = args->Int("lat-iters", o.lat_iters, 1, 1 << 30);
  auto seconds = args->Seconds("seconds", o.seconds);
  auto window = args->Int("window", o.window, 1, 1 << 16);
  auto report = args->Sizes("report-size", {o.report_size});
  for (auto* s : {&sizes.status(), &iters.status(), &lat_iters.status(), &seconds.status(),
                  &window.status(), &report.status()}) {
    if (!s->ok()) return *s;
  }
  o.sizes = *sizes;
  o.iters = *iters;
  o.lat_iters = *lat_iters;
  o.seconds = *seconds;
  o.window = static_cast<int>(*window);
  o.report_size = report->front();
  o.stream = !args->Has("no-stream");
  o.ping = !args->Has("no-ping");
  if (auto s = args->CheckAllUsed(); !s.ok()) return s;
  return RunClient(o);
}

}  // namespace

int main(int argc, char** argv) {
  // A vanished peer must surface as an error, not kill us with SIGPIPE.
  std::signal(SIGPIPE, SIG_IGN);
  absl::Status s = Main(std::vector<std::string>(argv + 1, argv + argc));
  if (!s.ok()) {
    std::fprintf(stderr, "geops-bench-transport: %s\n", std::string(s.message()).c_str());
    return absl::IsInvalidArgument(s) ? 2 : 1;
  }
  return 0;
}
