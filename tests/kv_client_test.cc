// KVClient on a tier that never came up: every request must complete (with
// an error), never leave Wait() blocked.
#include <catch2/catch.hpp>
#include <thread>

#include "core/node/open_tier.h"
#include "core/cluster/tier_node.h"
#include "core/kv/kv_client.h"

using namespace geops;

TEST_CASE("requests on a failed or empty tier complete at once instead of hanging") {
  TierOptions o;
  o.cluster.scheduler_addr = "127.0.0.1";
  o.cluster.scheduler_port = 1;
  auto tier = OpenTierNode(o);
  REQUIRE(tier.ok());
  KVClient kv(**tier);
  // No node table: no servers.
  RuleSpec rule;
  absl::Status s;
  std::thread waiter([&] { s = kv.Wait(kv.SetRule(rule)); });
  waiter.join();  // a hang here is the bug
  REQUIRE_FALSE(s.ok());
  Key k = 1;
  uint64_t r = 1;
  const KVClient::Request pull{{&k, 1}, {}, {&r, 1}, DType::kFloat32, msgflag::kPull, {}, false};
  REQUIRE_FALSE(kv.Wait(kv.Submit(pull)).ok());
  // After the client failed (its tier aborted), both still answer at once.
  kv.Fail(absl::AbortedError("the tier stopped"));
  auto again = kv.Wait(kv.SetRule(rule));
  REQUIRE(absl::IsAborted(again));
  REQUIRE(absl::IsAborted(kv.Wait(kv.Submit(pull))));
}
