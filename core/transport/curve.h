// CURVE security for the tcp transport: the key file format, key
// generation, and the ZAP handler that admits only holders of the cluster
// key.
//
// A tier's cluster key is one CURVE key pair that every node of the tier
// holds (GEOPS_GLOBAL_KEYFILE / GEOPS_LOCAL_KEYFILE). Each listening socket
// is a CURVE server with that secret key, each connection a CURVE client
// with that key pair, and the ZAP handler refuses any client whose public
// key is not the cluster's: without the file, a peer can neither read the
// traffic nor register, send or abort anything.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/base/link.h"

namespace geops {

// Writes a fresh cluster key pair to `path` (mode 0600), refusing to
// overwrite an existing file.
absl::Status WriteCurveKeyFile(const std::string& path);

// Admits CURVE clients whose public key equals `keys.public_key` on
// `context`'s sockets whose ZAP domain is "geops"; logs and counts every
// refusal. Runs one thread until destroyed; create it before binding.
class ZapHandler {
 public:
  static absl::StatusOr<std::unique_ptr<ZapHandler>> Start(void* context, const CurveKeys& keys);
  ~ZapHandler();
  ZapHandler(const ZapHandler&) = delete;
  ZapHandler& operator=(const ZapHandler&) = delete;

  uint64_t refused() const { return refused_.load(); }

 private:
  ZapHandler(void* socket, std::string public_key_bin);
  void Run();

  void* socket_;                 // REP on inproc://zeromq.zap.01; only Run() touches it
  const std::string public_key_; // 32 bytes
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> refused_{0};
  std::thread thread_;
};

}  // namespace geops
