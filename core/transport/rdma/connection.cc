// What rdma_cm carries for a connection (the secret, the refusal that
// names it) and address resolution. The events themselves are in cm.cc.
#include "core/transport/rdma/connection.h"

#include <arpa/inet.h>
#include <netdb.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_format.h"

namespace geops::rdma {
namespace {

// "GEOPS1", a length byte and the shared secret on connect; "GEOPS1" and
// 0xff on a refusal because of it. IB carries at most 56 bytes in a
// connect request and pads what it carries.
constexpr char kCmTag[] = "GEOPS1";
constexpr size_t kCmTagLen = 6;
constexpr uint8_t kCmRefusedSecret = 0xff;

}  // namespace

std::string ConnectPrivateData(const std::string& secret) {
  std::string d(kCmTag, kCmTagLen);
  d.push_back(static_cast<char>(secret.size()));
  d += secret;
  return d;
}

bool SecretMatches(const void* data, size_t len, const std::string& secret) {
  if (secret.empty()) return true;  // no secret configured: accept anyone
  std::string want = ConnectPrivateData(secret);
  return data != nullptr && len >= want.size() && std::memcmp(data, want.data(), want.size()) == 0;
}

std::string SecretRefusal() {
  std::string refusal(kCmTag, kCmTagLen);
  refusal.push_back(static_cast<char>(kCmRefusedSecret));
  return refusal;
}

bool RefusedForSecret(const void* data, size_t len) {
  return data != nullptr && len > kCmTagLen && std::memcmp(data, kCmTag, kCmTagLen) == 0 &&
         static_cast<const uint8_t*>(data)[kCmTagLen] == kCmRefusedSecret;
}

absl::StatusOr<sockaddr_in> Resolve(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  addrinfo* res = nullptr;
  if (getaddrinfo(host.c_str(), nullptr, &hints, &res) != 0 || res == nullptr) {
    return absl::InvalidArgumentError(absl::StrFormat("rdma: cannot resolve %s", host));
  }
  sockaddr_in a = *reinterpret_cast<sockaddr_in*>(res->ai_addr);
  freeaddrinfo(res);
  a.sin_port = htons(static_cast<uint16_t>(port));
  return a;
}

}  // namespace geops::rdma
