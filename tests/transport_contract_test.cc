// The Transport contract (transport_contract.h) on the transports the host
// has: tcp and in-process. tests/rdma_transport_test.cc runs it on rdma in
// the SoftRoCE VM.
#include "tests/transport_contract.h"

#include <thread>

#include "core/transport/inproc_transport.h"
#include "core/transport/tcp_transport.h"

using namespace geops;

TEST_CASE("transport contract: tcp", "[transport]") {
  testing::TransportContract([] { return std::make_unique<TcpTransport>(); }, "127.0.0.1");
}

TEST_CASE("transport contract: in-process", "[transport]") {
  auto net = std::make_shared<InProcNetwork>();
  testing::TransportContract([net] { return std::make_unique<InProcTransport>(net); },
                             "127.0.0.1");
}
