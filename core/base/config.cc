#include "core/base/config.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"

namespace geops {
namespace {

using env::Bad;
using env::Get;
using env::GetBool;
using env::GetInt;
using env::GetSeconds;

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

// The local address the kernel routes from towards `host` (a UDP connect
// sends nothing; it only selects a route).
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

absl::StatusOr<TierConfig> ParseTier(const EnvLookup& env, bool global, bool counts_fallback,
                                     const std::string& who) {
  const char* uri = global ? "DMLC_PS_GLOBAL_ROOT_URI" : "DMLC_PS_ROOT_URI";
  const char* port = global ? "DMLC_PS_GLOBAL_ROOT_PORT" : "DMLC_PS_ROOT_PORT";
  const char* nserver = global ? "DMLC_NUM_GLOBAL_SERVER" : "DMLC_NUM_SERVER";
  const char* nworker = global ? "DMLC_NUM_GLOBAL_WORKER" : "DMLC_NUM_WORKER";
  TierConfig t;
  auto host = Get(env, uri);
  if (!host) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s is not set: expected the IP or host name of the %s scheduler (needed by %s)", uri,
        global ? "global" : "local", who));
  }
  auto addr = ResolveIPv4(*host);
  if (!addr.ok()) return Bad(uri, *host, "an IPv4 address or a resolvable host name");
  t.scheduler_host = *host;
  t.scheduler_addr = *addr;
  auto p = GetInt(env, port, 1, 65535, std::nullopt,
                  absl::StrCat("the ", global ? "global" : "local", " scheduler's port, needed by ",
                               who));
  if (!p.ok()) return p.status();
  t.scheduler_port = *p;
  // The seed lets the global scheduler read its counts from DMLC_NUM_SERVER /
  // DMLC_NUM_WORKER; the global names win when both are set.
  std::optional<int> fs, fw;
  if (counts_fallback) {
    auto s = GetInt(env, "DMLC_NUM_SERVER", 1, 1 << 16, 0, "");
    auto w = GetInt(env, "DMLC_NUM_WORKER", 1, 1 << 16, 0, "");
    if (!s.ok()) return s.status();
    if (!w.ok()) return w.status();
    if (*s > 0) fs = *s;
    if (*w > 0) fw = *w;
  }
  auto s = GetInt(env, nserver, 1, 1 << 16, fs, absl::StrCat("needed by ", who));
  if (!s.ok()) return s.status();
  auto w = GetInt(env, nworker, 1, 1 << 16, fw, absl::StrCat("needed by ", who));
  if (!w.ok()) return w.status();
  t.num_servers = *s;
  t.num_workers = *w;
  return t;
}

// Reads a key file written by `geops --gen-keyfile`: lines "public=<z85>"
// and "secret=<z85>". Every fault names the variable and the file.
absl::StatusOr<CurveKeys> ReadKeyFile(std::string_view var, const std::string& path) {
  std::ifstream f(path);
  if (!f) {
    return Bad(var, path, "a readable key file (make one with: geops --gen-keyfile FILE)");
  }
  CurveKeys k;
  std::string line;
  while (std::getline(f, line)) {
    line = std::string(absl::StripAsciiWhitespace(line));
    if (absl::StartsWith(line, "public=")) k.public_key = line.substr(7);
    if (absl::StartsWith(line, "secret=")) k.secret_key = line.substr(7);
  }
  auto z85 = [](const std::string& s) {
    return s.size() == 40 && s.find_first_not_of("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLM"
                                                 "NOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#") ==
                                 std::string::npos;
  };
  if (!z85(k.public_key) || !z85(k.secret_key)) {
    return Bad(var, path,
               "a key file with lines public=<40 Z85 characters> and secret=<40 Z85 "
               "characters> (make one with: geops --gen-keyfile FILE)");
  }
  return k;
}

// GeoMX's accelerator switches. geops does not implement them yet, so a
// launch script that sets them must hear so: the ones that change what
// training computes are refused, the ones that only change how bytes travel
// are warned about once.
absl::Status CheckGeoMXVariables(const EnvLookup& env, std::vector<std::string>* warnings) {
  struct Refused {
    const char* name;
    const char* off;  // the value that means "off"
    const char* why;
  };
  for (const Refused& r : {
           Refused{"ENABLE_DGT", "0",
                   "0 or unset: geops does not implement DGT (lossy UDP transmission); every "
                   "gradient travels reliably over TCP"},
       }) {
    auto v = Get(env, r.name);
    if (v && *v != r.off && absl::AsciiStrToLower(*v) != "false") return Bad(r.name, *v, r.why);
  }
  struct Ignored {
    const char* name;
    const char* instead;
  };
  for (const Ignored& i : {
           Ignored{"DMLC_UDP_CHANNEL_NUM", "DGT is not implemented; TCP carries everything"},
           Ignored{"DMLC_K", "DGT is not implemented; TCP carries everything"},
           Ignored{"ADAPTIVE_K_FLAG", "DGT is not implemented; TCP carries everything"},
           Ignored{"ENABLE_INTER_TS", "TSEngine is not implemented; ZeroMQ schedules the links"},
           Ignored{"ENABLE_INTRA_TS", "TSEngine is not implemented; ZeroMQ schedules the links"},
           Ignored{"MAX_GREED_RATE_TS", "TSEngine is not implemented"},
       }) {
    if (auto v = Get(env, i.name)) {
      warnings->push_back(absl::StrFormat("%s=\"%s\" is a GeoMX setting geops ignores: %s", i.name,
                                          *v, i.instead));
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::string Config::Describe() const {
  if (!role) return "global_scheduler";
  std::string s(RoleName(*role));
  if (master_worker) s = "master_worker";
  if (global_role == Role::kServer) s = "global_server";
  if (global_role == Role::kWorker) s += "+global_worker";
  return s;
}

EnvLookup ProcessEnv() {
  return [](std::string_view name) -> std::optional<std::string> {
    const char* v = std::getenv(std::string(name).c_str());
    if (v == nullptr) return std::nullopt;
    return std::string(v);
  };
}

absl::StatusOr<Config> ParseConfig(const EnvLookup& env) {
  Config c;
  auto role = Get(env, "DMLC_ROLE");
  auto grole = Get(env, "DMLC_ROLE_GLOBAL");

  if (grole) {
    std::string g = absl::AsciiStrToLower(*grole);
    if (g == "global_scheduler") c.global_role = Role::kScheduler;
    else if (g == "global_server") c.global_role = Role::kServer;
    else if (g == "worker" || g == "global_worker") c.global_role = Role::kWorker;
    else return Bad("DMLC_ROLE_GLOBAL", *grole, "one of global_scheduler, global_server, worker");
  }

  if (role) {
    std::string r = absl::AsciiStrToLower(*role);
    if (r == "scheduler") c.role = Role::kScheduler;
    else if (r == "server") c.role = Role::kServer;
    else if (r == "worker") c.role = Role::kWorker;
    else if (r == "global_scheduler" && c.global_role != Role::kServer &&
             c.global_role != Role::kWorker) {
      c.global_role = Role::kScheduler;
    } else {
      return Bad("DMLC_ROLE", *role, "one of scheduler, server, worker");
    }
  } else if (c.global_role != Role::kScheduler) {
    return absl::InvalidArgumentError(
        "DMLC_ROLE is not set: expected one of scheduler, server, worker "
        "(or DMLC_ROLE_GLOBAL=global_scheduler)");
  }

  // Cross-checks between the two roles.
  if (c.global_role == Role::kServer && c.role != Role::kServer) {
    return Bad("DMLC_ROLE", role.value_or(""),
               "server when DMLC_ROLE_GLOBAL=global_server (a global server is also a server "
               "of the central party)");
  }
  if (c.global_role == Role::kWorker && c.role != Role::kServer) {
    return Bad("DMLC_ROLE", role.value_or(""),
               "server when DMLC_ROLE_GLOBAL=worker (a party's local server is the global "
               "tier's worker)");
  }
  if (c.global_role == Role::kScheduler && c.role) {
    return Bad("DMLC_ROLE", *role,
               "unset (or global_scheduler) when DMLC_ROLE_GLOBAL=global_scheduler: run the "
               "party's scheduler as a process of its own");
  }

  auto master = GetBool(env, "DMLC_ROLE_MASTER_WORKER");
  if (!master.ok()) return master.status();
  c.master_worker = *master;
  if (c.master_worker && c.role != Role::kWorker) {
    return Bad("DMLC_ROLE", role.value_or(""), "worker when DMLC_ROLE_MASTER_WORKER=1");
  }

  // A party's server joins the global tier when a global scheduler is named,
  // even without DMLC_ROLE_GLOBAL (GeoMX launch scripts leave it unset).
  if (c.role == Role::kServer && !c.global_role &&
      Get(env, "DMLC_PS_GLOBAL_ROOT_URI")) {
    c.global_role = Role::kWorker;
  }

  auto verbose = GetInt(env, "PS_VERBOSE", 0, 2, 0, "");
  if (!verbose.ok()) return verbose.status();
  c.verbose = *verbose;

  auto central = GetBool(env, "DMLC_ENABLE_CENTRAL_WORKER");
  if (!central.ok()) return central.status();
  c.enable_central_worker = *central;
  c.enable_central_worker_set = Get(env, "DMLC_ENABLE_CENTRAL_WORKER").has_value();

  auto all = GetInt(env, "DMLC_NUM_ALL_WORKER", 1, 1 << 20, 0, "");
  if (!all.ok()) return all.status();
  c.num_all_workers = *all;

  std::string who = c.Describe();
  if (c.role) {
    auto t = ParseTier(env, /*global=*/false, /*counts_fallback=*/false, who);
    if (!t.ok()) return t.status();
    c.local = *t;
    if (c.num_all_workers > 0 && c.role == Role::kWorker && !c.master_worker &&
        c.num_all_workers < c.local->num_workers) {
      return Bad("DMLC_NUM_ALL_WORKER", absl::StrCat(c.num_all_workers),
                 absl::StrFormat("at least DMLC_NUM_WORKER (%d): it counts every training "
                                 "worker of the cluster",
                                 c.local->num_workers));
    }
  }
  if (c.in_global_tier()) {
    auto t = ParseTier(env, /*global=*/true,
                       /*counts_fallback=*/c.global_role == Role::kScheduler, who);
    if (!t.ok()) return t.status();
    c.global = *t;
  }
  if (c.global_role == Role::kServer &&
      c.local->num_servers != c.global->num_servers) {
    // The central party's servers are exactly the global servers.
    return Bad("DMLC_NUM_SERVER", absl::StrCat(c.local->num_servers),
               absl::StrFormat("DMLC_NUM_GLOBAL_SERVER (%d) for a global server: the central "
                               "party's servers are the global servers",
                               c.global->num_servers));
  }

  auto node_host = Get(env, "DMLC_NODE_HOST");
  auto iface = Get(env, "DMLC_INTERFACE");
  if (node_host) {
    in_addr a{};
    if (inet_pton(AF_INET, node_host->c_str(), &a) != 1) {
      return Bad("DMLC_NODE_HOST", *node_host, "an IPv4 address of this host");
    }
    c.node_host = *node_host;
  } else if (iface) {
    auto addr = InterfaceAddress(*iface);
    if (!addr.ok()) return addr.status();
    c.node_host = *addr;
  } else {
    // Without a hint, use the source address the kernel would pick to reach
    // our scheduler: loopback clusters stay on 127.0.0.1 and multi-host ones
    // advertise the interface that actually routes to the scheduler.
    const TierConfig& t = c.local ? *c.local : *c.global;
    auto addr = RouteSourceAddress(t.scheduler_host);
    if (!addr.ok()) return addr.status();
    c.node_host = *addr;
  }
  if (c.role == Role::kScheduler || c.global_role == Role::kScheduler) {
    // A scheduler listens where DMLC_PS_(GLOBAL_)ROOT_URI says it does.
    c.node_host = c.local ? c.local->scheduler_addr : c.global->scheduler_addr;
  }
  if (auto v = Get(env, "GEOPS_PARTY")) {
    if (v->size() > 64 || v->find_first_of(" \t\n\"") != std::string::npos) {
      return Bad("GEOPS_PARTY", *v, "a short name without spaces or quotes (64 characters at most)");
    }
    c.party = *v;
  } else if (c.local) {
    c.party = absl::StrFormat("%s:%d", c.local->scheduler_host, c.local->scheduler_port);
  }

  auto port = GetInt(env, "PORT", 0, 65535, 0, "");
  if (!port.ok()) return port.status();
  c.port = *port;

  std::optional<VanType> asked[2];
  const char* van_names[2] = {"DMLC_PS_VAN_TYPE", "DMLC_ENABLE_RDMA"};
  for (int i = 0; i < 2; ++i) {
    auto v = Get(env, van_names[i]);
    if (!v) continue;
    std::string s = absl::AsciiStrToLower(*v);
    bool is_van = i == 0;
    if (s == "ibverbs" || (!is_van && (s == "1" || s == "true"))) {
      asked[i] = VanType::kRdma;
    } else if (s == "zmq" || s == "tcp" || (!is_van && (s == "0" || s == "false"))) {
      asked[i] = VanType::kTcp;
    } else {
      return Bad(van_names[i], *v, is_van ? "zmq or ibverbs" : "0, 1 or ibverbs");
    }
  }
  if (asked[0] && asked[1] && *asked[0] != *asked[1]) {
    return Bad("DMLC_ENABLE_RDMA", *Get(env, "DMLC_ENABLE_RDMA"),
               absl::StrCat("a value that agrees with DMLC_PS_VAN_TYPE=\"",
                            *Get(env, "DMLC_PS_VAN_TYPE"), "\" (or unset one of them)"));
  }
  c.local_van = asked[0].value_or(asked[1].value_or(VanType::kTcp));

  auto mem = GetInt(env, "GEOPS_RDMA_MEM_LIMIT", 64, 1 << 24,
                    static_cast<int>(c.rdma_mem_limit >> 20), "");
  if (!mem.ok()) return mem.status();
  c.rdma_mem_limit = static_cast<size_t>(*mem) << 20;
  auto slot = GetInt(env, "GEOPS_RDMA_SLOT_BYTES", 1024, 1 << 20,
                     static_cast<int>(c.rdma_slot_bytes), "");
  if (!slot.ok()) return slot.status();
  c.rdma_slot_bytes = static_cast<size_t>(*slot);

  auto hb = GetSeconds(env, "PS_HEARTBEAT_INTERVAL", c.heartbeat_interval);
  if (!hb.ok()) return hb.status();
  c.heartbeat_interval = *hb;
  auto hbt = GetSeconds(env, "PS_HEARTBEAT_TIMEOUT", c.heartbeat_timeout);
  if (!hbt.ok()) return hbt.status();
  c.heartbeat_timeout = *hbt;
  if (c.heartbeat_timeout < 2 * c.heartbeat_interval) {
    // Name the variable the user actually set.
    if (Get(env, "PS_HEARTBEAT_TIMEOUT")) {
      return Bad("PS_HEARTBEAT_TIMEOUT", *Get(env, "PS_HEARTBEAT_TIMEOUT"),
                 absl::StrCat("at least twice PS_HEARTBEAT_INTERVAL (",
                              absl::FormatDuration(c.heartbeat_interval), ")"));
    }
    return Bad("PS_HEARTBEAT_INTERVAL", *Get(env, "PS_HEARTBEAT_INTERVAL"),
               absl::StrCat("at most half of PS_HEARTBEAT_TIMEOUT (default ",
                            absl::FormatDuration(c.heartbeat_timeout), ")"));
  }
  auto ghb = GetSeconds(env, "GEOPS_GLOBAL_HEARTBEAT_TIMEOUT", c.heartbeat_timeout);
  if (!ghb.ok()) return ghb.status();
  c.global_heartbeat_timeout = *ghb;
  if (c.global_heartbeat_timeout < 2 * c.heartbeat_interval) {
    return Bad("GEOPS_GLOBAL_HEARTBEAT_TIMEOUT", *Get(env, "GEOPS_GLOBAL_HEARTBEAT_TIMEOUT"),
               absl::StrCat("at least twice PS_HEARTBEAT_INTERVAL (",
                            absl::FormatDuration(c.heartbeat_interval), ")"));
  }
  auto st = GetSeconds(env, "GEOPS_STARTUP_TIMEOUT", c.startup_timeout);
  if (!st.ok()) return st.status();
  c.startup_timeout = *st;
  auto ct = GetSeconds(env, "GEOPS_CONNECT_TIMEOUT", std::min(c.connect_timeout, c.startup_timeout));
  if (!ct.ok()) return ct.status();
  c.connect_timeout = *ct;
  if (auto v = Get(env, "PS_RESEND")) {
    auto on = GetBool(env, "PS_RESEND");
    if (!on.ok()) return on.status();
    c.resend_local = c.resend_global = *on;
  }
  auto rt = GetInt(env, "PS_RESEND_TIMEOUT", 10, 3600 * 1000, 1000, "");
  if (!rt.ok()) return rt.status();
  c.resend_timeout = absl::Milliseconds(*rt);
  auto mm = GetInt(env, "GEOPS_MAX_MESSAGE_MB", 1, 16384,
                   static_cast<int>(c.max_message_bytes >> 20), "");
  if (!mm.ok()) return mm.status();
  c.max_message_bytes = static_cast<size_t>(*mm) << 20;
  auto cb = GetInt(env, "GEOPS_WAN_COALESCE_BYTES", 0, 64 << 20,
                   static_cast<int>(c.wan_coalesce_bytes), "");
  if (!cb.ok()) return cb.status();
  c.wan_coalesce_bytes = static_cast<size_t>(*cb);
  auto cu = GetInt(env, "GEOPS_WAN_COALESCE_US", 0, 1000000,
                   static_cast<int>(absl::ToInt64Microseconds(c.wan_coalesce_delay)), "");
  if (!cu.ok()) return cu.status();
  c.wan_coalesce_delay = absl::Microseconds(*cu);
  if (auto v = Get(env, "GEOPS_WAN_DTYPE")) {
    std::string d = absl::AsciiStrToLower(*v);
    if (d == "float32" || d == "fp32") c.wan_precision = Config::WanPrecision::kFull;
    else if (d == "float16" || d == "fp16") c.wan_precision = Config::WanPrecision::kFloat16;
    else if (d == "bfloat16" || d == "bf16") c.wan_precision = Config::WanPrecision::kBFloat16;
    else return Bad("GEOPS_WAN_DTYPE", *v, "float32, float16 (fp16) or bfloat16 (bf16)");
  }
  auto p3 = GetBool(env, "ENABLE_P3");
  if (!p3.ok()) return p3.status();
  c.wan_priority = *p3;
  auto win = GetInt(env, "GEOPS_WAN_WINDOW_KB", 16, 4 << 20,
                    static_cast<int>(c.wan_window_bytes >> 10), "");
  if (!win.ok()) return win.status();
  c.wan_window_bytes = static_cast<size_t>(*win) << 10;
  auto bb = GetInt(env, "MXNET_KVSTORE_BIGARRAY_BOUND", 0, INT32_MAX,
                   static_cast<int>(c.bigarray_bound), "");
  if (!bb.ok()) return bb.status();
  c.bigarray_bound = *bb;
  if (auto v = Get(env, "GEOPS_WAN_TOPK")) {
    absl::string_view t = *v;
    const bool percent = absl::ConsumeSuffix(&t, "%");
    double d = 0;
    if (!absl::SimpleAtod(t, &d) || !(d > 0)) d = -1;
    if (percent) d /= 100;
    if (!(d >= 0.0001 && d <= 1)) {
      return Bad("GEOPS_WAN_TOPK", *v,
                 "the fraction of each key sent over the WAN, 0.0001..1 or 0.01%..100% (e.g. 1%)");
    }
    c.wan_topk = d;
  }
  auto lb = GetInt(env, "MXNET_KVSTORE_SIZE_LOWER_BOUND", 0, INT32_MAX,
                   static_cast<int>(c.wan_topk_min_elems), "");
  if (!lb.ok()) return lb.status();
  c.wan_topk_min_elems = *lb;
  if (auto v = Get(env, "GEOPS_WAN_SYNC")) {
    std::string m = absl::AsciiStrToLower(*v);
    if (m == "sync" || m == "full") c.wan_mixed = false;
    else if (m == "mixed" || m == "async") c.wan_mixed = true;
    else return Bad("GEOPS_WAN_SYNC", *v, "sync (every round waits for every party) or mixed");
  }
  auto stale = GetInt(env, "GEOPS_WAN_STALENESS", 0, 1000000, c.wan_staleness, "");
  if (!stale.ok()) return stale.status();
  c.wan_staleness = *stale;
  auto hfa = GetBool(env, "MXNET_KVSTORE_USE_HFA");
  if (!hfa.ok()) return hfa.status();
  c.hfa = *hfa;
  auto k1 = GetInt(env, "MXNET_KVSTORE_HFA_K1", 1, 1000000, c.hfa_k1, "");
  if (!k1.ok()) return k1.status();
  c.hfa_k1 = *k1;
  auto k2 = GetInt(env, "MXNET_KVSTORE_HFA_K2", 1, 1000000, c.hfa_k2, "");
  if (!k2.ok()) return k2.status();
  c.hfa_k2 = *k2;
  for (const char* v : {"GEOPS_WAN_TOPK", "GEOPS_WAN_DTYPE", "GEOPS_WAN_SYNC", "GEOPS_WAN_STALENESS",
                        "MXNET_KVSTORE_SIZE_LOWER_BOUND", "MXNET_KVSTORE_USE_HFA",
                        "MXNET_KVSTORE_HFA_K2"}) {
    c.wan_policy_given |= Get(env, v).has_value();
  }
  if (c.hfa && c.wan_mixed) {
    return Bad("GEOPS_WAN_SYNC", "mixed",
               "sync with MXNET_KVSTORE_USE_HFA=1: HFA's global aggregations are synchronous");
  }
  if (auto s = CheckGeoMXVariables(env, &c.warnings); !s.ok()) return s;
  if (auto path = Get(env, "GEOPS_GLOBAL_KEYFILE"); path && c.in_global_tier()) {
    auto k = ReadKeyFile("GEOPS_GLOBAL_KEYFILE", *path);
    if (!k.ok()) return k.status();
    c.global_keys = *k;
  }
  if (auto path = Get(env, "GEOPS_LOCAL_KEYFILE"); path && c.in_local_tier()) {
    if (c.local_van == VanType::kRdma) {
      return Bad("GEOPS_LOCAL_KEYFILE", *path,
                 "unset with DMLC_PS_VAN_TYPE=ibverbs: CURVE encrypts tcp tiers only");
    }
    auto k = ReadKeyFile("GEOPS_LOCAL_KEYFILE", *path);
    if (!k.ok()) return k.status();
    c.local_keys = *k;
  }
  if (auto path = Get(env, "GEOPS_RDMA_SECRET_FILE"); path && c.in_local_tier()) {
    std::ifstream f(*path);
    std::stringstream text;
    text << f.rdbuf();
    std::string secret(absl::StripAsciiWhitespace(text.str()));
    if (!f || secret.size() < 16 || secret.size() > 48 ||
        secret.find('\n') != std::string::npos) {
      return Bad("GEOPS_RDMA_SECRET_FILE", *path,
                 "a readable file holding one line of 16 to 48 characters (for example: "
                 "head -c 24 /dev/urandom | base64 > FILE)");
    }
    c.rdma_secret = secret;
  }
  return c;
}

std::string ConfigHelp() {
  return R"(geops: a two-tier parameter server (GeoMX / ps-lite compatible).

usage: geops [--help] [--gen-keyfile FILE] [--check-config]
  The role and the whole topology come from the environment, exactly as for
  GeoMX and ps-lite. A worker role runs the built-in synthetic trainer; a
  training program links libgeops and uses geops::KVWorker instead (or, in
  Python, `import geops`). --check-config parses the environment, prints
  "configuration ok: ROLE" and exits 0, or prints the error and exits 2,
  without starting anything.

Roles
  DMLC_ROLE                 scheduler | server | worker: the role in the party
                            (local tier). Unset only for the global scheduler.
  DMLC_ROLE_GLOBAL          global_scheduler | global_server | worker: the role
                            in the global tier. global_server needs
                            DMLC_ROLE=server. A server with a global scheduler
                            address is a global-tier worker even when unset.
  DMLC_ROLE_MASTER_WORKER   1: this worker (DMLC_ROLE=worker) is the master
                            worker: it sets the update rule and pushes the
                            initial parameters. Default 0.

Local tier (one per party)
  DMLC_PS_ROOT_URI          IP or host name of the party's scheduler.
  DMLC_PS_ROOT_PORT         its port, 1..65535.
  DMLC_NUM_SERVER           servers registered with that scheduler (>= 1).
                            In the central party these are the global servers.
  DMLC_NUM_WORKER           workers registered with that scheduler (>= 1).

Global tier
  DMLC_PS_GLOBAL_ROOT_URI   IP or host name of the global scheduler.
  DMLC_PS_GLOBAL_ROOT_PORT  its port, 1..65535.
  DMLC_NUM_GLOBAL_SERVER    global servers (>= 1). The global scheduler falls
                            back to DMLC_NUM_SERVER when unset.
  DMLC_NUM_GLOBAL_WORKER    global-tier workers, i.e. the local servers of all
                            parties (>= 1); falls back to DMLC_NUM_WORKER for
                            the global scheduler.

Training
  DMLC_NUM_ALL_WORKER       training workers in the whole cluster. The
                            built-in trainer needs it to predict the exact
                            global sum when there is more than one party
                            (default: its own party's training workers).
  DMLC_ENABLE_CENTRAL_WORKER 1: the central party's workers (the master worker
                            included) train and contribute every round.
                            0 (default): their pushes are ignored and the
                            master worker only initialises. As in GeoMX it
                            is read on the global servers; any process of
                            the central party may set it, and the central
                            scheduler refuses values that disagree.

GeoMX accelerators geops does not implement
  ENABLE_DGT (not 0) is refused at start (geops sends everything reliably
  over TCP); DMLC_UDP_CHANNEL_NUM, DMLC_K, ADAPTIVE_K_FLAG, ENABLE_INTER_TS,
  ENABLE_INTRA_TS and MAX_GREED_RATE_TS are reported once as ignored, with
  what geops does instead. GeoMX's BSC, FP16, MixedSync, HFA and P3 are
  the WAN tier's variables above.

Networking
  DMLC_NODE_HOST            IPv4 address this node listens on and advertises.
  DMLC_INTERFACE            network interface whose IPv4 address to use
                            (when DMLC_NODE_HOST is unset). Default: the
                            address that routes to the scheduler.
  PORT                      this node's local-tier listening port; 0 or unset
                            picks an ephemeral one.
  DMLC_PS_VAN_TYPE          zmq (default) | ibverbs: transport of the local tier.
  DMLC_ENABLE_RDMA          0 | 1 | ibverbs: same as DMLC_PS_VAN_TYPE=ibverbs.
                            The global tier always runs over TCP.
  GEOPS_RDMA_MEM_LIMIT      MiB of memory the rdma transport may register
                            (pin) in all (default 2048).
  GEOPS_RDMA_SLOT_BYTES     receive slot size; larger messages move by RDMA
                            write into registered memory (default 16384).

Liveness
  PS_HEARTBEAT_INTERVAL     seconds between heartbeats (default 1).
  PS_HEARTBEAT_TIMEOUT      seconds of silence after which a peer is declared
                            dead and the cluster stops with an error naming it
                            (default 15; at least twice the interval).
  PS_RESEND                 1: on every tcp tier, requests that were unanswered
                            when their connection broke are sent again, and
                            servers drop the duplicates, so a connection reset
                            mid-round loses and doubles nothing; 0: never.
                            Default: the global (WAN) tier only.
  PS_RESEND_TIMEOUT         at most this many milliseconds from a broken
                            connection to the resend (default 1000).
  GEOPS_GLOBAL_HEARTBEAT_TIMEOUT  the same for the global (WAN) tier, which
                            may need longer: a link between data centres can
                            stall for seconds and recover (default: as
                            PS_HEARTBEAT_TIMEOUT).
  GEOPS_STARTUP_TIMEOUT     seconds a scheduler waits for every node to
                            register, and a node for its node table (default 300).
  GEOPS_CONNECT_TIMEOUT     seconds a node waits for its scheduler to answer
                            its registration; then it stops, naming the
                            scheduler's address (default 30, at most
                            GEOPS_STARTUP_TIMEOUT).

WAN tier (see README "Cross-DC experiments")
  MXNET_KVSTORE_BIGARRAY_BOUND  a key of at least this many elements is spread
                            over every global server, a contiguous slice each,
                            so one big tensor uses all of them (default
                            1000000, as in GeoMX; 0: never). Give every
                            process the same value.
  GEOPS_WAN_COALESCE_BYTES  a party server sends the sums of small keys bound
                            for the same global server in one WAN message of
                            up to this many bytes; a key this big goes alone
                            (default 65536; 0: one message per key).
  GEOPS_WAN_COALESCE_US     ... and no sum waits longer than this for company
                            (microseconds, default 1000); a batch also leaves
                            as soon as the server has read every message its
                            workers sent.
  GEOPS_WAN_DTYPE           float16 (fp16) or bfloat16 (bf16): a party server
                            sends its float32 sums, and gets their results, in
                            16 bits (rounded to nearest even); the global
                            servers sum in float32. Halves the WAN's bytes; the
                            party's own tier stays float32. Default float32.
  ENABLE_P3                 1: a party server sends its sums in priority order
                            (older rounds first, then lower keys: number keys
                            in forward order, as frameworks register layers)
                            with at most GEOPS_WAN_WINDOW_KB on their way up,
                            and pulls their results in the same order with at
                            most as much on its way down, so the first layers
                            overtake big tensors still queued (P3, as in
                            GeoMX). Default 0: as they come.
  GEOPS_WAN_WINDOW_KB       that window in KiB (default 8192); at least the
                            WAN's rate x RTT, or the link idles, and smaller
                            than a round's bytes, or nothing waits to be
                            overtaken.

  A master worker given any of the variables below sends that WAN policy to
  every server with the update rule; it then overrides the servers' own.
  GEOPS_WAN_TOPK            top-k with error feedback on the WAN, both ways: a
                            party server sends this fraction of each float32
                            key (largest magnitudes, exact indices; 0.01%..100%,
                            e.g. 1% or 0.01) and keeps the rest as a residual it
                            adds to the next round; a global server sends its
                            results (sgd: the change of the weights) down the
                            same way. Values in GEOPS_WAN_DTYPE. Default: dense.
  MXNET_KVSTORE_SIZE_LOWER_BOUND  keys smaller than this many elements go dense
                            (default 200000, as in GeoMX).
  GEOPS_WAN_SYNC            mixed: MixedSync. Each party stays synchronous
                            inside; the global servers apply a party's sum
                            when it arrives (sgd rule) and answer at once, so
                            a fast party never waits for a slow one, up to
                            GEOPS_WAN_STALENESS rounds ahead of the slowest.
                            Default sync: every round waits for every party.
  GEOPS_WAN_STALENESS       that bound in rounds (default 2; 0: lock step).
  MXNET_KVSTORE_USE_HFA     1: hierarchical frequency aggregation. Training
                            programs take MXNET_KVSTORE_HFA_K1 local steps
                            (default 20) between pushes of their models; a
                            party server averages its workers' models and
                            sends every MXNET_KVSTORE_HFA_K2-th (default 10)
                            party average to the global servers, which
                            average over all workers (the `average` rule; give
                            them DMLC_NUM_ALL_WORKER).

Security
  GEOPS_GLOBAL_KEYFILE      a key file: the global tier runs ZeroMQ CURVE with
                            it (encrypted, and only holders of the same file
                            may connect, register, send or abort). Give every
                            process of the global tier the same file; make it
                            with `geops --gen-keyfile FILE`. Default: plain.
  GEOPS_LOCAL_KEYFILE       the same for a party's tcp tier (independent of the
                            global one: a party may stay plain).
  GEOPS_RDMA_SECRET_FILE    a file with one line of 16-48 characters that every
                            connection of an rdma tier must present (rdma_cm
                            private data) or be refused. It keeps strangers on
                            the fabric out; it travels in clear, so anyone who
                            can capture the fabric can learn it, and it
                            encrypts nothing. (head -c 24 /dev/urandom | base64)

Limits
  GEOPS_MAX_MESSAGE_MB      largest frame (one key's value) a tcp peer may send,
                            in MiB (default 256). A peer announcing more is
                            disconnected before anything is buffered; a sender
                            refuses to build such a frame, naming this variable.
                            Set it to the same value on every node.

Names
  GEOPS_PARTY               this process's party name in logs (default: the
                            local scheduler's host:port). geops-launch sets
                            central, A, B, ...

Logging
  PS_VERBOSE                0 | 1 | 2: 1 logs connections (ids, roles,
                            addresses), 2 also every message.

Built-in trainer (DMLC_ROLE=worker)
  GEOPS_ROUNDS              synchronous rounds to run (default 10).
  GEOPS_KEY_SIZES           comma-separated element counts, one key each
                            (default 262144,262144,131072: about 2.5 MB).
  GEOPS_DTYPE               float32 | float64 | int32 | int64 (default float32).
  GEOPS_RULE                sum | sgd: update rule the master worker sets
                            (default sum).
  GEOPS_LR                  learning rate of sgd (default 0.5).
  GEOPS_PROGRESS            1: print a line per round (default 1).

Example trainer (DMLC_ROLE=worker with GEOPS_TRAIN set)
  GEOPS_TRAIN               softmax | mlp | mlp:HIDDEN: train on Fashion-MNIST
                            (Debian package dataset-fashion-mnist) instead of
                            the synthetic check. The master worker sets the
                            rule (sgd at GEOPS_LR on the global servers, or
                            average with MXNET_KVSTORE_USE_HFA=1) and the
                            initial model; shard 0 prints test accuracy after
                            every epoch. geops-launch --train sets it up.
  GEOPS_SHARD               i/N: this worker's share of the training set
                            (examples i, i+N, ...); geops-launch sets it.
  GEOPS_EPOCHS              passes over the training set (default 3).
  GEOPS_BATCH               examples per step and worker (default 32).
  GEOPS_LR                  learning rate (default 0.1 here).
  GEOPS_LR_DECAY            1 (default): the rate falls linearly to a tenth
                            by the last epoch; 0: constant.
  GEOPS_TRAIN_EXAMPLES      train on the first N images (default all 60000).
  GEOPS_TEST_EXAMPLES       test on the first N images (default all 10000).
  GEOPS_DATA_DIR            where the four .gz files are (default
                            /usr/share/datasets/fashion-mnist).
  GEOPS_SEED                the initial model's seed (default 1).
  GEOPS_TRAIN_TRACE         1: a line per round (geops-train round=N).

Exit status: 0 on an orderly shutdown, 1 on a runtime failure (dead peer,
wrong result), 2 on a configuration error.
)";
}

}  // namespace geops
