// geops-bench-transport: the two ends of a Transport benchmark.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/base/config.h"
#include "core/transport/transport.h"

namespace geops::bench {

struct ServerOptions {
  VanType van = VanType::kTcp;
  std::string host = "127.0.0.1";
  int port = 0;                 // 0: ephemeral, printed
  double hello_timeout_s = 300; // how long to wait for a client
  double idle_timeout_s = 60;   // a silent client after HELLO is an error
};

// Serves exactly one client, then returns.
absl::Status RunServer(const ServerOptions& o);

struct ClientOptions {
  VanType van = VanType::kTcp;
  std::string server_host;
  int server_port = 0;
  std::string host;              // where the client listens; empty: the
                                 // address that routes to the server
  std::vector<uint64_t> sizes;
  int64_t iters = 1000;          // streamed messages per size (at most)
  int64_t lat_iters = 1000;      // ping-pongs per size (at most)
  double seconds = 2;            // per phase and size (at most)
  int window = 16;               // streamed messages in flight
  bool stream = true;
  bool ping = true;
  uint64_t report_size = 1 << 20;  // the size named in the summary
};

absl::Status RunClient(const ClientOptions& o);

// MakeTransport for `van`; an rdma failure says "rdma transport unavailable".
absl::StatusOr<std::unique_ptr<Transport>> OpenTransport(VanType van);

}  // namespace geops::bench
