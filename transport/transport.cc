#include "transport/transport.h"

#include "transport/tcp_transport.h"
#ifdef GEOPS_HAVE_RDMA
#include "transport/rdma_transport.h"
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
      o.mem_limit = options.rdma_mem_limit;
      o.slot_bytes = options.rdma_slot_bytes;
      o.connect_timeout = options.connect_timeout;
      o.secret = options.rdma_secret;
      auto t = RdmaTransport::Create(o);
      if (!t.ok()) return t.status();
      return std::unique_ptr<Transport>(std::move(*t));
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
