#include "bench/net_util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace geops::bench {
namespace {

// Closes a socket on every return path.
class Socket {
 public:
  explicit Socket(int type) : fd_(socket(AF_INET, type, 0)) {}
  ~Socket() {
    if (fd_ >= 0) close(fd_);
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  int fd() const { return fd_; }

 private:
  int fd_;
};

absl::StatusOr<sockaddr_in> Ipv4(const std::string& host, int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("\"", host, "\" is not an IPv4 address"));
  }
  return a;
}

}  // namespace

absl::StatusOr<std::string> LocalAddressTowards(const std::string& host) {
  auto dst = Ipv4(host, 9);
  if (!dst.ok()) return dst.status();
  Socket s(SOCK_DGRAM);
  sockaddr_in src{};
  socklen_t len = sizeof(src);
  // A UDP connect sends nothing; it only picks the route and source address.
  if (s.fd() < 0 || connect(s.fd(), reinterpret_cast<const sockaddr*>(&*dst), sizeof(*dst)) != 0 ||
      getsockname(s.fd(), reinterpret_cast<sockaddr*>(&src), &len) != 0) {
    return absl::UnavailableError(absl::StrCat("no route to ", host, "; pass --host"));
  }
  char buf[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &src.sin_addr, buf, sizeof(buf));
  return std::string(buf);
}

absl::Status SplitHostPort(const std::string& text, std::string* host, int* port) {
  auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(text.substr(colon + 1), port) || *port < 1 || *port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("\"", text, "\": expected host:port"));
  }
  *host = text.substr(0, colon);
  return absl::OkStatus();
}

}  // namespace geops::bench
