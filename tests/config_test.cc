#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>

#include <catch2/catch.hpp>
#include <map>
#include <string>

#include "core/base/config.h"

using namespace geops;
using Env = std::map<std::string, std::string>;

namespace {

absl::StatusOr<Config> Parse(const Env& env) {
  return ParseConfig([&](std::string_view name) -> std::optional<std::string> {
    auto it = env.find(std::string(name));
    if (it == env.end()) return std::nullopt;
    return it->second;
  });
}

Env Local(std::string role) {
  return {{"DMLC_ROLE", role},
          {"DMLC_PS_ROOT_URI", "127.0.0.1"},
          {"DMLC_PS_ROOT_PORT", "9000"},
          {"DMLC_NUM_SERVER", "2"},
          {"DMLC_NUM_WORKER", "3"}};
}

Env Global(Env e) {
  e["DMLC_PS_GLOBAL_ROOT_URI"] = "127.0.0.1";
  e["DMLC_PS_GLOBAL_ROOT_PORT"] = "9100";
  e["DMLC_NUM_GLOBAL_SERVER"] = "1";
  e["DMLC_NUM_GLOBAL_WORKER"] = "4";
  return e;
}

// The error names the variable and the value, on one line.
void RequireError(const Env& env, const std::string& variable, const std::string& value) {
  auto c = Parse(env);
  REQUIRE_FALSE(c.ok());
  std::string msg(c.status().message());
  INFO(msg);
  REQUIRE(msg.find(variable) != std::string::npos);
  REQUIRE(msg.find(value) != std::string::npos);
  REQUIRE(msg.find('\n') == std::string::npos);
}

}  // namespace

TEST_CASE("a party worker parses with its tier and defaults") {
  auto c = Parse(Local("worker"));
  REQUIRE(c.ok());
  REQUIRE(c->role == Role::kWorker);
  REQUIRE(!c->global_role);
  REQUIRE(c->local->scheduler_port == 9000);
  REQUIRE(c->local->num_servers == 2);
  REQUIRE(c->local->num_workers == 3);
  REQUIRE(c->node_host == "127.0.0.1");
  REQUIRE(c->local_van == VanType::kTcp);
  REQUIRE_FALSE(c->global.has_value());
}

TEST_CASE("a server with a global scheduler address is a global-tier worker") {
  auto c = Parse(Global(Local("server")));
  REQUIRE(c.ok());
  REQUIRE(c->global_role == Role::kWorker);
  REQUIRE(c->global->num_workers == 4);
  REQUIRE(c->global->scheduler_port == 9100);
}

TEST_CASE("global server and global scheduler") {
  Env gs = Global(Local("server"));
  gs["DMLC_ROLE_GLOBAL"] = "global_server";
  gs["DMLC_NUM_SERVER"] = "1";
  auto c = Parse(gs);
  REQUIRE(c.ok());
  REQUIRE(c->global_role == Role::kServer);

  Env sched = {{"DMLC_ROLE_GLOBAL", "global_scheduler"},
               {"DMLC_PS_GLOBAL_ROOT_URI", "127.0.0.1"},
               {"DMLC_PS_GLOBAL_ROOT_PORT", "9100"},
               {"DMLC_NUM_SERVER", "2"},
               {"DMLC_NUM_WORKER", "5"}};
  auto s = Parse(sched);
  REQUIRE(s.ok());
  REQUIRE_FALSE(s->role.has_value());
  // The seed's fallback: the global scheduler's counts from DMLC_NUM_*.
  REQUIRE(s->global->num_servers == 2);
  REQUIRE(s->global->num_workers == 5);
}

TEST_CASE("master worker, central workers, verbosity, van type") {
  Env e = Local("worker");
  e["DMLC_ROLE_MASTER_WORKER"] = "1";
  e["DMLC_ENABLE_CENTRAL_WORKER"] = "1";
  e["PS_VERBOSE"] = "2";
  e["DMLC_PS_VAN_TYPE"] = "ibverbs";
  auto c = Parse(e);
  REQUIRE(c.ok());
  REQUIRE(c->master_worker);
  REQUIRE(c->enable_central_worker);
  REQUIRE(c->verbose == 2);
  REQUIRE(c->local_van == VanType::kRdma);
  e.erase("DMLC_PS_VAN_TYPE");
  e["DMLC_ENABLE_RDMA"] = "1";
  REQUIRE(Parse(e)->local_van == VanType::kRdma);
}

TEST_CASE("every bad value is named with its value and what is expected") {
  Env e = Local("worker");
  e["DMLC_ROLE"] = "boss";
  RequireError(e, "DMLC_ROLE", "boss");

  e = Local("worker");
  e["DMLC_PS_ROOT_PORT"] = "70000";
  RequireError(e, "DMLC_PS_ROOT_PORT", "70000");

  e = Local("worker");
  e["DMLC_PS_ROOT_PORT"] = "12ab";
  RequireError(e, "DMLC_PS_ROOT_PORT", "12ab");

  e = Local("server");
  e["DMLC_ROLE_MASTER_WORKER"] = "1";
  RequireError(e, "DMLC_ROLE", "server");

  e = Local("worker");
  e["DMLC_ROLE_MASTER_WORKER"] = "maybe";
  RequireError(e, "DMLC_ROLE_MASTER_WORKER", "maybe");

  e = Local("server");
  e["DMLC_ROLE_GLOBAL"] = "global_server";  // but no global scheduler address
  RequireError(e, "DMLC_PS_GLOBAL_ROOT_URI", "not set");

  e = Local("worker");
  e["DMLC_ROLE_GLOBAL"] = "global_server";
  RequireError(e, "DMLC_ROLE", "worker");

  e = Local("worker");
  e["DMLC_ROLE_GLOBAL"] = "emperor";
  RequireError(e, "DMLC_ROLE_GLOBAL", "emperor");

  e = Local("worker");
  e.erase("DMLC_NUM_WORKER");
  RequireError(e, "DMLC_NUM_WORKER", "not set");

  e = Local("worker");
  e["DMLC_NUM_SERVER"] = "0";
  RequireError(e, "DMLC_NUM_SERVER", "0");

  e = Local("worker");
  e["DMLC_NUM_ALL_WORKER"] = "2";  // fewer than this party's 3 workers
  RequireError(e, "DMLC_NUM_ALL_WORKER", "2");

  e = Local("worker");
  e["PS_VERBOSE"] = "3";
  RequireError(e, "PS_VERBOSE", "3");

  e = Local("worker");
  e["DMLC_NODE_HOST"] = "not-an-ip";
  RequireError(e, "DMLC_NODE_HOST", "not-an-ip");

  e = Local("worker");
  e["DMLC_INTERFACE"] = "nosuchif0";
  RequireError(e, "DMLC_INTERFACE", "nosuchif0");

  e = Local("worker");
  e["DMLC_PS_ROOT_URI"] = "no.such.host.invalid";
  RequireError(e, "DMLC_PS_ROOT_URI", "no.such.host.invalid");

  e = Local("worker");
  e["DMLC_PS_VAN_TYPE"] = "carrier-pigeon";
  RequireError(e, "DMLC_PS_VAN_TYPE", "carrier-pigeon");

  e = Local("worker");
  e["PS_HEARTBEAT_INTERVAL"] = "5";
  e["PS_HEARTBEAT_TIMEOUT"] = "6";
  RequireError(e, "PS_HEARTBEAT_TIMEOUT", "\"6\"");

  e = Local("worker");
  e["PORT"] = "-1";
  RequireError(e, "PORT", "-1");

  e = Local("worker");
  e["GEOPS_RDMA_MEM_LIMIT"] = "12";
  RequireError(e, "GEOPS_RDMA_MEM_LIMIT", "12");

  e = Local("worker");
  e["GEOPS_RDMA_SLOT_BYTES"] = "lots";
  RequireError(e, "GEOPS_RDMA_SLOT_BYTES", "lots");

  e = Local("worker");
  e["DMLC_PS_VAN_TYPE"] = "zmq";
  e["DMLC_ENABLE_RDMA"] = "1";
  RequireError(e, "DMLC_ENABLE_RDMA", "DMLC_PS_VAN_TYPE");

  e = Local("worker");
  e["PS_HEARTBEAT_INTERVAL"] = "10";  // the timeout is left at its default
  RequireError(e, "PS_HEARTBEAT_INTERVAL", "10");

  e = Global(Local("server"));  // DMLC_NUM_SERVER=2, DMLC_NUM_GLOBAL_SERVER=1
  e["DMLC_ROLE_GLOBAL"] = "global_server";
  RequireError(e, "DMLC_NUM_SERVER", "DMLC_NUM_GLOBAL_SERVER");

  RequireError({}, "DMLC_ROLE", "not set");
}

namespace {

// This machine's first IPv4 address that is not loopback, with its interface.
std::optional<std::pair<std::string, std::string>> OtherInterface() {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return std::nullopt;
  std::optional<std::pair<std::string, std::string>> found;
  for (ifaddrs* a = list; a != nullptr && !found; a = a->ifa_next) {
    if (a->ifa_addr == nullptr || a->ifa_addr->sa_family != AF_INET) continue;
    char buf[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(a->ifa_addr)->sin_addr, buf, sizeof(buf));
    if (std::string(buf).rfind("127.", 0) != 0) found = {{a->ifa_name, buf}};
  }
  freeifaddrs(list);
  return found;
}

}  // namespace

TEST_CASE("DMLC_INTERFACE picks the interface's address, not the default one") {
  auto other = OtherInterface();
  if (!other) {
    WARN("skipped: this machine has no IPv4 interface besides loopback");
    return;
  }
  const auto& [ifname, addr] = *other;
  INFO(ifname << " has " << addr);
  // Scheduler on loopback: the default would be 127.0.0.1.
  Env e = Local("worker");
  REQUIRE(Parse(e)->node_host == "127.0.0.1");
  e["DMLC_INTERFACE"] = ifname;
  REQUIRE(Parse(e)->node_host == addr);
  // Scheduler on the other address: the default would be that address.
  e = Local("worker");
  e["DMLC_PS_ROOT_URI"] = addr;
  REQUIRE(Parse(e)->node_host == addr);
  e["DMLC_INTERFACE"] = "lo";
  REQUIRE(Parse(e)->node_host == "127.0.0.1");
}

TEST_CASE("scheduler host names resolve to the address the scheduler binds") {
  Env e = Local("scheduler");
  e["DMLC_PS_ROOT_URI"] = "localhost";
  auto c = Parse(e);
  REQUIRE(c.ok());
  REQUIRE(c->local->scheduler_host == "localhost");
  REQUIRE(c->local->scheduler_addr == "127.0.0.1");
  REQUIRE(c->node_host == "127.0.0.1");
  e["DMLC_PS_ROOT_URI"] = "no-such-host.invalid";
  RequireError(e, "DMLC_PS_ROOT_URI", "no-such-host.invalid");
}

TEST_CASE("GeoMX accelerator variables are refused or reported, never ignored silently") {
  Env e = Local("worker");
  e["ENABLE_DGT"] = "2";
  RequireError(e, "ENABLE_DGT", "2");
  e.erase("ENABLE_DGT");
  e["ENABLE_INTER_TS"] = "1";
  e["DMLC_K"] = "0.8";
  auto c = Parse(e);
  REQUIRE(c.ok());
  REQUIRE(c->warnings.size() == 2);
  std::string all = c->warnings[0] + "\n" + c->warnings[1];
  REQUIRE(all.find("ENABLE_INTER_TS=\"1\"") != std::string::npos);
  REQUIRE(all.find("DMLC_K=\"0.8\"") != std::string::npos);
  REQUIRE(Parse(Local("worker"))->warnings.empty());
}

TEST_CASE("the WAN tier's variables parse and are checked") {
  Env e = Local("worker");
  auto c = Parse(e);
  REQUIRE(c->bigarray_bound == 1000000);  // GeoMX's default
  REQUIRE_FALSE(c->wan_priority);
  REQUIRE(c->wan_coalesce_bytes == 65536);
  e["ENABLE_P3"] = "1";
  e["GEOPS_WAN_WINDOW_KB"] = "2048";
  e["MXNET_KVSTORE_BIGARRAY_BOUND"] = "0";
  e["GEOPS_WAN_COALESCE_BYTES"] = "0";
  e["GEOPS_WAN_COALESCE_US"] = "250";
  c = Parse(e);
  REQUIRE(c.ok());
  REQUIRE(c->warnings.empty());  // implemented now, so not reported as ignored
  REQUIRE(c->wan_priority);
  REQUIRE(c->wan_window_bytes == size_t{2} << 20);
  REQUIRE(c->bigarray_bound == 0);
  REQUIRE(c->wan_coalesce_bytes == 0);
  REQUIRE(c->wan_coalesce_delay == absl::Microseconds(250));
  REQUIRE(c->wan_dtype == DType::kNone);
  e["GEOPS_WAN_DTYPE"] = "BF16";
  REQUIRE(Parse(e)->wan_dtype == DType::kBFloat16);
  e["GEOPS_WAN_DTYPE"] = "float16";
  REQUIRE(Parse(e)->wan_dtype == DType::kFloat16);
  REQUIRE(c->wan_topk == 0);
  REQUIRE(c->wan_topk_min_elems == 200000);  // GeoMX's default
  REQUIRE_FALSE(c->wan_mixed);
  REQUIRE_FALSE(c->hfa);
  e["GEOPS_WAN_TOPK"] = "1%";
  REQUIRE(Parse(e)->wan_topk == Approx(0.01));
  e["GEOPS_WAN_TOPK"] = "0.001";
  e["MXNET_KVSTORE_SIZE_LOWER_BOUND"] = "1000";
  e["GEOPS_WAN_SYNC"] = "mixed";
  e["GEOPS_WAN_STALENESS"] = "3";
  c = Parse(e);
  REQUIRE(c.ok());
  REQUIRE(c->warnings.empty());
  REQUIRE(c->wan_topk == Approx(0.001));
  REQUIRE(c->wan_topk_min_elems == 1000);
  REQUIRE(c->wan_mixed);
  REQUIRE(c->wan_staleness == 3);
  // HFA's global rounds are synchronous: not together with MixedSync.
  e["MXNET_KVSTORE_USE_HFA"] = "1";
  RequireError(e, "GEOPS_WAN_SYNC", "mixed");
  e["GEOPS_WAN_SYNC"] = "sync";
  e["MXNET_KVSTORE_HFA_K1"] = "4";
  e["MXNET_KVSTORE_HFA_K2"] = "2";
  c = Parse(e);
  REQUIRE(c.ok());
  REQUIRE(c->hfa);
  REQUIRE(c->hfa_k1 == 4);
  REQUIRE(c->hfa_k2 == 2);
  for (auto [name, bad] : {std::pair{"GEOPS_WAN_TOPK", "0"}, {"GEOPS_WAN_TOPK", "150%"},
                           {"GEOPS_WAN_TOPK", "some"}, {"GEOPS_WAN_TOPK", "0.00001"},
                           {"MXNET_KVSTORE_SIZE_LOWER_BOUND", "-3"}, {"GEOPS_WAN_SYNC", "eventual"},
                           {"GEOPS_WAN_STALENESS", "-1"}, {"MXNET_KVSTORE_USE_HFA", "maybe"},
                           {"MXNET_KVSTORE_HFA_K1", "0"}, {"MXNET_KVSTORE_HFA_K2", "x"}}) {
    Env b = e;
    b[name] = bad;
    RequireError(b, name, bad);
  }
  for (auto [name, bad] : {std::pair{"ENABLE_P3", "yes please"}, {"GEOPS_WAN_WINDOW_KB", "8"},
                           {"MXNET_KVSTORE_BIGARRAY_BOUND", "-1"},
                           {"GEOPS_WAN_COALESCE_BYTES", "lots"}, {"GEOPS_WAN_COALESCE_US", "-5"},
                           {"GEOPS_WAN_DTYPE", "int8"}}) {
    Env b = e;
    b[name] = bad;
    RequireError(b, name, bad);
  }
}

TEST_CASE("limits and timeouts of the trust work parse and are checked") {
  Env e = Local("worker");
  auto c = Parse(e);
  REQUIRE(c->max_message_bytes == size_t{256} << 20);
  REQUIRE(c->connect_timeout == absl::Seconds(30));
  e["GEOPS_MAX_MESSAGE_MB"] = "64";
  e["GEOPS_CONNECT_TIMEOUT"] = "2.5";
  e["GEOPS_PARTY"] = "eu-west";
  c = Parse(e);
  REQUIRE(c.ok());
  REQUIRE(c->max_message_bytes == size_t{64} << 20);
  REQUIRE(c->connect_timeout == absl::Milliseconds(2500));
  REQUIRE(c->party == "eu-west");
  e["GEOPS_MAX_MESSAGE_MB"] = "0";
  RequireError(e, "GEOPS_MAX_MESSAGE_MB", "0");
  e["GEOPS_MAX_MESSAGE_MB"] = "64";
  e["GEOPS_PARTY"] = "two words";
  RequireError(e, "GEOPS_PARTY", "two words");
  e["GEOPS_PARTY"] = "eu-west";
  REQUIRE(Parse(e)->global_heartbeat_timeout == absl::Seconds(15));  // as PS_HEARTBEAT_TIMEOUT
  e["GEOPS_GLOBAL_HEARTBEAT_TIMEOUT"] = "120";
  REQUIRE(Parse(e)->global_heartbeat_timeout == absl::Seconds(120));
  REQUIRE(Parse(e)->heartbeat_timeout == absl::Seconds(15));
  e["GEOPS_GLOBAL_HEARTBEAT_TIMEOUT"] = "1";
  RequireError(e, "GEOPS_GLOBAL_HEARTBEAT_TIMEOUT", "1");
  // Without GEOPS_PARTY a party is named by its scheduler's address.
  REQUIRE(Parse(Local("worker"))->party == "127.0.0.1:9000");
}

TEST_CASE("geops --help documents every variable") {
  std::string help = ConfigHelp();
  for (const char* v :
       {"DMLC_ROLE", "DMLC_ROLE_GLOBAL", "DMLC_ROLE_MASTER_WORKER", "DMLC_PS_ROOT_URI",
        "DMLC_PS_ROOT_PORT", "DMLC_PS_GLOBAL_ROOT_URI", "DMLC_PS_GLOBAL_ROOT_PORT",
        "DMLC_NUM_SERVER", "DMLC_NUM_WORKER", "DMLC_NUM_ALL_WORKER", "DMLC_ENABLE_CENTRAL_WORKER",
        "PS_VERBOSE", "DMLC_NUM_GLOBAL_SERVER", "DMLC_NUM_GLOBAL_WORKER", "DMLC_INTERFACE",
        "DMLC_NODE_HOST", "PORT", "DMLC_PS_VAN_TYPE", "DMLC_ENABLE_RDMA", "PS_HEARTBEAT_INTERVAL",
        "PS_HEARTBEAT_TIMEOUT", "GEOPS_STARTUP_TIMEOUT", "GEOPS_ROUNDS", "GEOPS_KEY_SIZES",
        "GEOPS_DTYPE", "GEOPS_RULE", "GEOPS_LR", "GEOPS_PROGRESS", "GEOPS_RDMA_MEM_LIMIT",
        "GEOPS_RDMA_SLOT_BYTES", "GEOPS_CONNECT_TIMEOUT", "GEOPS_MAX_MESSAGE_MB", "GEOPS_PARTY",
        "MXNET_KVSTORE_USE_HFA", "ENABLE_P3", "GEOPS_GLOBAL_KEYFILE", "GEOPS_LOCAL_KEYFILE",
        "GEOPS_RDMA_SECRET_FILE", "GEOPS_GLOBAL_HEARTBEAT_TIMEOUT", "GEOPS_WAN_WINDOW_KB",
        "GEOPS_WAN_COALESCE_BYTES", "GEOPS_WAN_COALESCE_US", "MXNET_KVSTORE_BIGARRAY_BOUND",
        "GEOPS_WAN_DTYPE", "GEOPS_WAN_TOPK", "MXNET_KVSTORE_SIZE_LOWER_BOUND", "GEOPS_WAN_SYNC",
        "GEOPS_WAN_STALENESS", "MXNET_KVSTORE_HFA_K1", "MXNET_KVSTORE_HFA_K2", "GEOPS_TRAIN",
        "GEOPS_SHARD", "GEOPS_EPOCHS", "GEOPS_BATCH", "GEOPS_TRAIN_EXAMPLES", "GEOPS_TEST_EXAMPLES",
        "GEOPS_DATA_DIR", "GEOPS_SEED", "GEOPS_TRAIN_TRACE", "GEOPS_LR_DECAY"}) {
    INFO(v);
    REQUIRE(help.find(v) != std::string::npos);
  }
}

TEST_CASE("key and secret files are checked at start, naming the variable") {
  Env e = Global(Local("server"));
  e["GEOPS_GLOBAL_KEYFILE"] = "/nonexistent/geops.key";
  RequireError(e, "GEOPS_GLOBAL_KEYFILE", "/nonexistent/geops.key");
  std::string bad = "/tmp/geops-config-test-bad.key";
  FILE* f = std::fopen(bad.c_str(), "w");
  std::fputs("public=tooshort\nsecret=tooshort\n", f);
  std::fclose(f);
  e["GEOPS_GLOBAL_KEYFILE"] = bad;
  RequireError(e, "GEOPS_GLOBAL_KEYFILE", bad);
  e.erase("GEOPS_GLOBAL_KEYFILE");
  e["GEOPS_RDMA_SECRET_FILE"] = bad;  // two lines: not a secret
  RequireError(e, "GEOPS_RDMA_SECRET_FILE", bad);
  f = std::fopen(bad.c_str(), "w");
  std::fputs("sixteen-chars-ok-secret\n", f);
  std::fclose(f);
  auto c = Parse(e);
  REQUIRE(c.ok());
  REQUIRE(c->rdma_secret == "sixteen-chars-ok-secret");
  e["DMLC_PS_VAN_TYPE"] = "ibverbs";
  e["GEOPS_LOCAL_KEYFILE"] = bad;
  RequireError(e, "GEOPS_LOCAL_KEYFILE", "ibverbs");
  std::remove(bad.c_str());
}
