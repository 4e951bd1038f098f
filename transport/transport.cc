#include "transport/transport.h"

#include "transport/tcp_transport.h"

namespace geops {

absl::StatusOr<std::unique_ptr<Transport>> MakeTransport(VanType type) {
  switch (type) {
    case VanType::kTcp:
      return std::unique_ptr<Transport>(std::make_unique<TcpTransport>());
    case VanType::kRdma:
      return absl::UnimplementedError(
          "DMLC_PS_VAN_TYPE=ibverbs / DMLC_ENABLE_RDMA: this build of geops has no RDMA "
          "transport; unset the variable to run the local tier over TCP");
  }
  return absl::InvalidArgumentError("unknown transport");
}

}  // namespace geops
