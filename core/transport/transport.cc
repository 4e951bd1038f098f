#include "core/transport/transport.h"

#include "core/transport/tcp_transport.h"
#ifdef GEOPS_HAVE_RDMA
#include "core/transport/rdma/rdma_transport.h"
#endif

namespace geops {

absl::StatusOr<std::unique_ptr<Transport>> MakeTransport(const TransportOptions& options) {
  switch (options.van) {
    case VanType::kTcp:
      {
      auto t = TcpTransport::Create(options.max_message_bytes, options.curve,
                                    options.watch_disconnects, options.stage_received);
      if (!t.ok()) return t.status();
      return std::unique_ptr<Transport>(std::move(*t));
    }
    case VanType::kRdma: {
#ifdef GEOPS_HAVE_RDMA
      RdmaOptions o;
      static_cast<TransportOptions&>(o) = options;
      return MakeRdmaTransport(o);
#else
      return absl::UnimplementedError(
          "DMLC_PS_VAN_TYPE=ibverbs / DMLC_ENABLE_RDMA: this build of geops has no RDMA "
          "transport (rdma-core headers were missing at build time: install libibverbs-dev "
          "and librdmacm-dev and rebuild), or unset the variable to use TCP");
#endif
    }
  }
  return absl::InvalidArgumentError("unknown transport");
}

}  // namespace geops
