#include "core/base/config.h"

#include <arpa/inet.h>

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
#include "core/base/config_wan.h"
#include "core/base/host_address.h"

namespace geops {
namespace {

using config_internal::InterfaceAddress;
using config_internal::ResolveIPv4;
using config_internal::RouteSourceAddress;

using env::Bad;
using env::Get;
using env::GetBool;
using env::GetInt;
using env::GetSeconds;

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

// DMLC_ROLE_GLOBAL and DMLC_ROLE, each on its own.
absl::Status ParseRoleNames(const EnvLookup& env, Config& c) {
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
  return absl::OkStatus();
}

// DMLC_ROLE, DMLC_ROLE_GLOBAL and DMLC_ROLE_MASTER_WORKER, and whether a
// party's server joins the global tier.
absl::Status ParseRoles(const EnvLookup& env, Config& c) {
  if (auto s = ParseRoleNames(env, c); !s.ok()) return s;
  auto role = Get(env, "DMLC_ROLE");
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
  return absl::OkStatus();
}

// PS_VERBOSE, and who trains: DMLC_ENABLE_CENTRAL_WORKER, DMLC_NUM_ALL_WORKER.
absl::Status ParseWorkers(const EnvLookup& env, Config& c) {
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
  return absl::OkStatus();
}

// The schedulers and node counts of the tiers this process is in.
absl::Status ParseTiers(const EnvLookup& env, Config& c) {
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
  return absl::OkStatus();
}

// Where this node listens and what it advertises: DMLC_NODE_HOST,
// DMLC_INTERFACE, GEOPS_PARTY, PORT.
absl::Status ParseNodeAddress(const EnvLookup& env, Config& c) {
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
  return absl::OkStatus();
}

// The local tier's transport: DMLC_PS_VAN_TYPE / DMLC_ENABLE_RDMA and the
// rdma transport's memory.
absl::Status ParseLocalTransport(const EnvLookup& env, Config& c) {
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
  return absl::OkStatus();
}

// Heartbeats of both tiers.
absl::Status ParseHeartbeats(const EnvLookup& env, Config& c) {
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
  return absl::OkStatus();
}

// Start-up and connect timeouts, resend, and the largest frame.
absl::Status ParseTimeoutsAndLimits(const EnvLookup& env, Config& c) {
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
  return absl::OkStatus();
}

// CURVE key files of the tcp tiers and the rdma tier's secret.
absl::Status ParseSecurity(const EnvLookup& env, Config& c) {
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
  // In this order: the first offending variable is the one reported, and
  // each step may read what the ones before it decided.
  using Step = absl::Status (*)(const EnvLookup&, Config&);
  Config c;
  for (Step step : {ParseRoles, ParseWorkers, ParseTiers, ParseNodeAddress, ParseLocalTransport,
                    ParseHeartbeats, ParseTimeoutsAndLimits, config_internal::ParseWanTransfer,
                    config_internal::ParseWanPolicy, config_internal::ParseCheckpoints}) {
    if (auto s = step(env, c); !s.ok()) return s;
  }
  if (auto s = CheckGeoMXVariables(env, &c.warnings); !s.ok()) return s;
  if (auto s = ParseSecurity(env, c); !s.ok()) return s;
  return c;
}

}  // namespace geops
