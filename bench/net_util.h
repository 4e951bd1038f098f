// Small socket helpers the bench programs need before any transport exists.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace geops::bench {

// The local IPv4 address the kernel would send from towards `host`; the
// address a peer on that path can reach us at.
absl::StatusOr<std::string> LocalAddressTowards(const std::string& host);

// "host:port" -> host, port.
absl::Status SplitHostPort(const std::string& text, std::string* host, int* port);

}  // namespace geops::bench
