#include "core/base/host_address.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/base/env.h"

namespace geops::config_internal {

using env::Bad;

absl::StatusOr<std::string> ResolveIPv4(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  addrinfo* res = nullptr;
  if (getaddrinfo(host.c_str(), nullptr, &hints, &res) != 0 || res == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("cannot resolve host \"", host, "\""));
  }
  char buf[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(res->ai_addr)->sin_addr, buf, sizeof(buf));
  freeaddrinfo(res);
  return std::string(buf);
}

// A UDP connect sends nothing; it only selects a route.
absl::StatusOr<std::string> RouteSourceAddress(const std::string& host) {
  auto ip = ResolveIPv4(host);
  if (!ip.ok()) return ip.status();
  if (ip->rfind("127.", 0) == 0) return std::string("127.0.0.1");
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  if (fd < 0) return absl::InternalError("socket() failed");
  sockaddr_in dst{};
  dst.sin_family = AF_INET;
  dst.sin_port = htons(9);
  inet_pton(AF_INET, ip->c_str(), &dst.sin_addr);
  sockaddr_in src{};
  socklen_t len = sizeof(src);
  bool ok = connect(fd, reinterpret_cast<sockaddr*>(&dst), sizeof(dst)) == 0 &&
            getsockname(fd, reinterpret_cast<sockaddr*>(&src), &len) == 0;
  close(fd);
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "no route to the scheduler at ", *ip,
        ": set DMLC_NODE_HOST or DMLC_INTERFACE to this node's address"));
  }
  char buf[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &src.sin_addr, buf, sizeof(buf));
  return std::string(buf);
}

absl::StatusOr<std::string> InterfaceAddress(const std::string& ifname) {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return absl::InternalError("getifaddrs failed");
  std::string found;
  std::string names;
  for (ifaddrs* a = list; a != nullptr; a = a->ifa_next) {
    if (a->ifa_addr == nullptr || a->ifa_addr->sa_family != AF_INET) continue;
    absl::StrAppend(&names, names.empty() ? "" : ", ", a->ifa_name);
    if (ifname == a->ifa_name && found.empty()) {
      char buf[INET_ADDRSTRLEN];
      auto* sin = reinterpret_cast<sockaddr_in*>(a->ifa_addr);
      inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof(buf));
      found = buf;
    }
  }
  freeifaddrs(list);
  if (found.empty()) {
    return Bad("DMLC_INTERFACE", ifname,
               absl::StrCat("a network interface with an IPv4 address (have: ", names, ")"));
  }
  return found;
}

}  // namespace geops::config_internal
