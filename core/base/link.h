// What a tier's connections are made of: the van, and the CURVE keys of a
// tcp tier that runs encrypted. Config fills them in; the transport layer
// reads them without depending on the rest of the configuration.
#pragma once

#include <string>

namespace geops {

enum class VanType { kTcp, kRdma };

// A tier's CURVE cluster key pair, Z85-encoded (40 characters each).
struct CurveKeys {
  std::string public_key;
  std::string secret_key;
};

}  // namespace geops
