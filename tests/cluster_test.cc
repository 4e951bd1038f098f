// Multi-process tests: real `geops` processes on 127.0.0.1 with ephemeral
// ports, checked for bit-exact results (every worker verifies every value
// of every round and all must end on the same checksum).
#include <unistd.h>

#include <catch2/catch.hpp>
#include <csignal>
#include <cstdlib>

#include "cluster_util.h"

using namespace geops::deploy;
using namespace geops::testing;


TEST_CASE("GeoMX demo topology: 2 parties x 2 workers, exact sums over many rounds",
          "[cluster]") {
  RunExact(Base(30, "65536,65536,32768,5"), 4);
}

TEST_CASE("2 global servers x 2 local servers per party", "[cluster]") {
  Topology t = Base(15, "1000,2000,3000,4000,5000,6000,7000,8000");
  t.global_servers = 2;
  t.servers_per_party = 2;
  RunExact(t, 4);
}

TEST_CASE("three parties of different sizes", "[cluster]") {
  Topology t = Base(10, "4096,77,12345");
  t.parties = 3;
  t.workers_per_party = 3;
  t.servers_per_party = 3;
  t.global_servers = 3;
  RunExact(t, 9);
}

TEST_CASE("central workers enabled: the master worker and a central worker train",
          "[cluster]") {
  Topology t = Base(12, "30000,1,4097");
  t.central_workers = 1;
  t.central_training = true;
  RunExact(t, 6);
}

TEST_CASE("keys from 1 element to 16 MB in one round", "[cluster]") {
  // 4194304 float32 values = 16 MiB in a single key.
  RunExact(Base(3, "1,3,1000,65536,4194304"), 4);
}

TEST_CASE("the sgd rule: global servers hold the weights", "[cluster]") {
  Topology t = Base(20, "20000,3");
  t.env["GEOPS_RULE"] = "sgd";
  t.env["GEOPS_LR"] = "0.25";
  t.global_servers = 2;
  RunExact(t, 4);
  t.env["GEOPS_DTYPE"] = "float64";
  RunExact(t, 4);
}

TEST_CASE("integer dtypes are summed exactly", "[cluster]") {
  Topology t = Base(8, "5000,17");
  t.env["GEOPS_DTYPE"] = "int64";
  RunExact(t, 4);
  t.env["GEOPS_DTYPE"] = "int32";
  RunExact(t, 4);
}

TEST_CASE("single-tier ps-lite cluster: no global tier at all", "[cluster]") {
  auto port = [] {
    // Reuse Plan's free-port logic through a throwaway plan.
    Topology t;
    return Plan(t)->front().env.at("DMLC_PS_GLOBAL_ROOT_PORT");
  }();
  std::map<std::string, std::string> local = {
      {"DMLC_PS_ROOT_URI", "127.0.0.1"}, {"DMLC_PS_ROOT_PORT", port},
      {"DMLC_NUM_SERVER", "2"},          {"DMLC_NUM_WORKER", "3"},
      {"GEOPS_ROUNDS", "10"},            {"GEOPS_KEY_SIZES", "1000,3000"},
      {"GEOPS_PROGRESS", "0"},           {"DMLC_ENABLE_CENTRAL_WORKER", "1"}};
  auto with = [&](std::map<std::string, std::string> e) {
    for (auto& [k, v] : local) e.try_emplace(k, v);
    return e;
  };
  std::vector<ProcessSpec> specs = {
      {"scheduler", "p", with({{"DMLC_ROLE", "scheduler"}}), {}},
      {"server0", "p", with({{"DMLC_ROLE", "server"}}), {}},
      {"server1", "p", with({{"DMLC_ROLE", "server"}}), {}},
      {"worker0", "p", with({{"DMLC_ROLE", "worker"}, {"DMLC_ROLE_MASTER_WORKER", "1"}}), {}},
      {"worker1", "p", with({{"DMLC_ROLE", "worker"}}), {}},
      {"worker2", "p", with({{"DMLC_ROLE", "worker"}}), {}},
  };
  Outcome out = Run(specs);
  DumpFailures(out.results);
  for (const auto& r : out.results) REQUIRE(r.exit_code == 0);
  REQUIRE(out.summary.workers_reporting == 3);
  REQUIRE(out.summary.mismatches == 0);
  REQUIRE(out.summary.distinct_checksums == 1);
  REQUIRE(out.summary.values_checked == 3u * 11 * 4000);
}

TEST_CASE("a bad configuration exits 2 naming the variable", "[cluster]") {
  struct Case {
    std::map<std::string, std::string> env;
    std::string needle;
  };
  std::vector<Case> cases = {
      {{{"DMLC_ROLE", "worker"}, {"DMLC_PS_ROOT_URI", "127.0.0.1"},
        {"DMLC_PS_ROOT_PORT", "70000"}, {"DMLC_NUM_SERVER", "1"}, {"DMLC_NUM_WORKER", "1"}},
       "DMLC_PS_ROOT_PORT=\"70000\""},
      {{{"DMLC_ROLE", "wizard"}}, "DMLC_ROLE=\"wizard\""},
      {{{"DMLC_ROLE", "server"}, {"DMLC_ROLE_MASTER_WORKER", "1"}}, "DMLC_ROLE_MASTER_WORKER"},
      {{{"DMLC_ROLE", "server"}, {"DMLC_ROLE_GLOBAL", "global_server"},
        {"DMLC_PS_ROOT_URI", "127.0.0.1"}, {"DMLC_PS_ROOT_PORT", "9000"},
        {"DMLC_NUM_SERVER", "1"}, {"DMLC_NUM_WORKER", "1"}},
       "DMLC_PS_GLOBAL_ROOT_URI is not set"},
      {{{"DMLC_ROLE", "worker"}, {"DMLC_PS_ROOT_URI", "127.0.0.1"},
        {"DMLC_PS_ROOT_PORT", "9000"}, {"DMLC_NUM_SERVER", "1"}},
       "DMLC_NUM_WORKER is not set"},
      {{{"DMLC_ROLE", "worker"}, {"DMLC_PS_ROOT_URI", "127.0.0.1"},
        {"DMLC_PS_ROOT_PORT", "9000"}, {"DMLC_NUM_SERVER", "1"}, {"DMLC_NUM_WORKER", "1"},
        {"GEOPS_RULE", "adam"}},
       "GEOPS_RULE=\"adam\""},
  };
  // The example trainer's variables, each named when wrong.
  const std::map<std::string, std::string> worker = {
      {"DMLC_ROLE", "worker"}, {"DMLC_PS_ROOT_URI", "127.0.0.1"}, {"DMLC_PS_ROOT_PORT", "9000"},
      {"DMLC_NUM_SERVER", "1"}, {"DMLC_NUM_WORKER", "1"}, {"GEOPS_TRAIN", "mlp"}};
  for (auto [name, bad] : {std::pair{"GEOPS_TRAIN", "resnet"}, {"GEOPS_TRAIN", "mlp:0"},
                           {"GEOPS_EPOCHS", "0"}, {"GEOPS_BATCH", "lots"}, {"GEOPS_LR", "-1"},
                           {"GEOPS_SHARD", "4/4"}, {"GEOPS_SHARD", "1"},
                           {"GEOPS_TRAIN_EXAMPLES", "70000"}, {"GEOPS_TRAIN_TRACE", "yes"}}) {
    auto env = worker;
    env[name] = bad;
    cases.push_back({env, absl::StrCat(name, "=\"", bad, "\"")});
  }
  for (const auto& c : cases) {
    INFO(c.needle);
    absl::Time start = absl::Now();
    Outcome out = Run({{"bad", "x", c.env, {}}}, absl::Seconds(30));
    REQUIRE(out.results[0].exit_code == 2);
    REQUIRE(absl::Now() - start < absl::Seconds(10));
    std::string err = ReadFile(out.results[0].stderr_path);
    INFO(err);
    REQUIRE(err.find(c.needle) != std::string::npos);
    REQUIRE(std::count(err.begin(), err.end(), '\n') == 1);
  }
}

TEST_CASE("a worker killed mid-run stops the cluster with a clear error, no hang",
          "[cluster]") {
  Topology t = Base(100000, "2000");
  t.env["PS_HEARTBEAT_INTERVAL"] = "0.5";
  t.env["PS_HEARTBEAT_TIMEOUT"] = "3";
  t.env["GEOPS_PROGRESS"] = "1";
  auto plan = Plan(t);
  REQUIRE(plan.ok());
  auto c = StartUntilRound(*plan, "A.worker0", 5);
  absl::Time killed = absl::Now();
  REQUIRE(c->Kill("A.worker1", SIGKILL).ok());
  auto results = c->Wait();
  absl::Duration took = absl::Now() - killed;
  INFO("cluster stopped " << absl::FormatDuration(took) << " after the kill");
  REQUIRE(took < absl::Seconds(30));
  bool named = false;
  for (const auto& r : results) {
    INFO(r.name << " exit=" << r.exit_code << " signal=" << r.signal);
    if (r.name == "A.worker1") {
      REQUIRE(r.signal == SIGKILL);
      continue;
    }
    if (r.name == "central.master_worker") {
      REQUIRE(r.exit_code == 0);  // it finished initialising long before
      continue;
    }
    REQUIRE(r.signal == 0);      // nobody had to be killed by the launcher
    REQUIRE(r.exit_code == 1);   // and nobody claims success
    std::string err = ReadFile(r.stderr_path);
    if (err.find("has been silent") != std::string::npos &&
        err.find("worker") != std::string::npos) {
      named = true;
    }
  }
  REQUIRE(named);  // the dead worker is named in the survivors' logs
}
