// A node that dials a CURVE tier without the tier's key, or with another
// one, must fail its start within the connect timeout, naming the key
// variable, and then let go of its transport: every time. Each scenario
// runs many times in a row, in one process over real tcp transports, so a
// rare hang (one start in fifteen, seen under ThreadSanitizer) fails here
// instead of passing by luck.
#include <zmq.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/cluster/tier_node.h"
#include "core/cluster/tier_scheduler.h"
#include "core/node/open_tier.h"
#include "deploy/launcher.h"

using namespace geops;

namespace {

CurveKeys NewKeys() {
  char pub[41], sec[41];
  REQUIRE(zmq_curve_keypair(pub, sec) == 0);
  return CurveKeys{pub, sec};
}

TierOptions GlobalTier(int port, std::optional<CurveKeys> keys, absl::Duration connect) {
  TierOptions o;
  o.kind = TierKind::kGlobal;
  o.label = "global";
  o.cluster.scheduler_addr = "127.0.0.1";
  o.cluster.scheduler_port = port;
  o.cluster.num_servers = 1;
  o.cluster.num_workers = 1;
  o.transport.curve = std::move(keys);
  o.transport.watch_disconnects = true;  // as the global tier has, for resends
  o.connect_timeout = connect;
  o.startup_timeout = connect * 2;
  return o;
}

// Starts a node of the tier with `keys` against a scheduler holding the
// cluster key, `runs` times; each start must fail naming the variable, and
// start plus teardown must end within `bound`.
void RefusedEveryTime(const std::optional<CurveKeys>& keys, const std::string& cause, int runs) {
  const absl::Duration connect = absl::Seconds(1);
  // Room for a slow (sanitized) build; a hang would take for ever.
  const absl::Duration bound = connect + absl::Seconds(10);
  CurveKeys cluster = NewKeys();
  auto port = deploy::FreePort("127.0.0.1");
  REQUIRE(port.ok());
  auto scheduler = OpenTierScheduler(GlobalTier(*port, cluster, connect));
  REQUIRE(scheduler.ok());
  REQUIRE((*scheduler)->Start().ok());
  for (int i = 0; i < runs; ++i) {
    INFO("start " << i + 1 << " of " << runs);
    absl::Time t0 = absl::Now();
    absl::Status s;
    {
      TierOptions o = GlobalTier(*port, keys, connect);
      o.role = Role::kWorker;
      auto node = OpenTierNode(o);
      REQUIRE(node.ok());
      s = (*node)->Start();
    }  // the node, its transport and its ZeroMQ context go here
    absl::Duration took = absl::Now() - t0;
    INFO(s.ToString() << " after " << absl::FormatDuration(took));
    REQUIRE_FALSE(s.ok());
    REQUIRE(s.message().find("GEOPS_GLOBAL_KEYFILE") != std::string::npos);
    REQUIRE(s.message().find(cause) != std::string::npos);
    REQUIRE(took < bound);
  }
}

}  // namespace

TEST_CASE("a node without the tier's CURVE key fails its start in bounded time, every time",
          "[trust][curve]") {
  RefusedEveryTime(std::nullopt, "CURVE", 20);
}

TEST_CASE("a node with another CURVE key fails its start in bounded time, every time",
          "[trust][curve]") {
  RefusedEveryTime(NewKeys(), "CURVE", 20);
}
