// This host's addresses, as ParseConfig (core/base/config.cc) needs them:
// a name resolved to IPv4, the address the kernel routes from towards a
// scheduler, an interface's address. Nothing else calls them.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace geops::config_internal {

// `host` (a name or a dotted address) as a dotted IPv4 address.
absl::StatusOr<std::string> ResolveIPv4(const std::string& host);
// The local address the kernel routes from towards `host`; 127.0.0.1 for a
// loopback scheduler. The error names DMLC_NODE_HOST and DMLC_INTERFACE.
absl::StatusOr<std::string> RouteSourceAddress(const std::string& host);
// The IPv4 address of interface `ifname`; the error names DMLC_INTERFACE and
// lists the interfaces there are.
absl::StatusOr<std::string> InterfaceAddress(const std::string& ifname);

}  // namespace geops::config_internal
