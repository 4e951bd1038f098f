// The tier protocol and the servers' aggregation in one process, over
// InProcTransport: registration, ranks, barriers, the orderly end, aborts,
// and exact sums, with no socket and no child process.
#include <catch2/catch.hpp>
#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>

#include <cstring>

#include "core/kv/partition.h"
#include "core/kv/wan_uplink.h"
#include "tests/inproc_cluster.h"

using namespace geops;
using geops::testing::InProcCluster;

TEST_CASE("tier: registration gives every node one id, a rank per role and one table", "[tier]") {
  InProcCluster c(2, 3);
  REQUIRE(c.Start().ok());
  std::set<int> ids;
  std::set<int> server_ranks, worker_ranks;
  for (auto* group : {&c.server_tiers, &c.worker_tiers}) {
    for (auto& t : *group) {
      ids.insert(t->my_id());
      (group == &c.server_tiers ? server_ranks : worker_ranks).insert(t->my_rank());
      // Every node holds the same table (the scheduler in it), and finds
      // itself there.
      REQUIRE(t->nodes().size() == 6);
      for (size_t i = 0; i < t->nodes().size(); ++i) {
        REQUIRE(t->nodes()[i].DebugString() == c.worker_tiers[0]->nodes()[i].DebugString());
      }
      REQUIRE(t->Find(t->my_id()) != nullptr);
      REQUIRE(t->Members(Role::kServer).size() == 2);
      REQUIRE(t->Members(Role::kWorker).size() == 3);
    }
  }
  REQUIRE(ids.size() == 5);
  REQUIRE(server_ranks == std::set<int>{0, 1});
  REQUIRE(worker_ranks == std::set<int>{0, 1, 2});
  // The master worker is worker 0.
  REQUIRE(c.worker_tiers[0]->my_rank() == 0);

  // A barrier of the workers releases all three together.
  std::vector<std::thread> threads;
  std::vector<absl::Status> got(3);
  for (int i = 0; i < 3; ++i) {
    threads.emplace_back([&, i] { got[i] = c.worker_tiers[i]->Barrier(group::kWorkers); });
  }
  for (auto& th : threads) th.join();
  for (const auto& s : got) REQUIRE(s.ok());
  REQUIRE(c.Finish().ok());
}

TEST_CASE("tier: an abort by one node stops every node of the tier with its reason", "[tier]") {
  InProcCluster c(1, 2);
  REQUIRE(c.Start().ok());
  c.worker_tiers[1]->Abort("the data loader failed");
  for (auto* group : {&c.server_tiers, &c.worker_tiers}) {
    for (auto& t : *group) {
      for (int i = 0; i < 200 && t->health().ok(); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      REQUIRE_FALSE(t->health().ok());
      REQUIRE_THAT(std::string(t->health().message()),
                   Catch::Contains("the data loader failed"));
    }
  }
  absl::Status done = c.scheduler->WaitDone();
  REQUIRE_FALSE(done.ok());
  REQUIRE_THAT(std::string(done.message()), Catch::Contains("the data loader failed"));
  // A barrier on an aborted tier fails at once instead of waiting.
  REQUIRE_FALSE(c.worker_tiers[0]->Barrier(group::kWorkers).ok());
}

TEST_CASE("aggregator: exact sums over rounds, pulls wait for their round", "[tier][aggregator]") {
  InProcCluster c(2, 2);
  REQUIRE(c.Start().ok());
  // Keys spread over both servers; one of 3 elements, one of 1000.
  const std::vector<Key> keys = {SpreadKey(0, 2), SpreadKey(1, 2)};
  const std::vector<int> lens = {3, 1000};
  const size_t n = 1003;
  std::vector<float> init(n, 0.5f);
  REQUIRE(c.kv[0]->Wait(c.kv[0]->Init(keys, init, lens)).ok());
  for (int w = 0; w < 2; ++w) {
    std::vector<float> got;
    REQUIRE(c.kv[w]->Wait(c.kv[w]->Pull(keys, &got)).ok());
    REQUIRE(got == init);
  }
  for (int round = 1; round <= 5; ++round) {
    std::vector<float> a(n), b(n), out_a, out_b;
    for (size_t i = 0; i < n; ++i) {
      a[i] = static_cast<float>(round * 1000 + i);
      b[i] = static_cast<float>(round) * 0.25f - static_cast<float>(i);
    }
    // Worker 0 pushes and pulls first: its pull waits for worker 1's push.
    int ta = c.kv[0]->PushPull(keys, a, &out_a, lens);
    std::this_thread::sleep_for(std::chrono::milliseconds(round == 1 ? 50 : 0));
    int tb = c.kv[1]->PushPull(keys, b, &out_b, lens);
    REQUIRE(c.kv[0]->Wait(ta).ok());
    REQUIRE(c.kv[1]->Wait(tb).ok());
    REQUIRE(out_a.size() == n);
    for (size_t i = 0; i < n; ++i) REQUIRE(out_a[i] == a[i] + b[i]);
    REQUIRE(out_b == out_a);
  }
  uint64_t closed = 0;
  for (auto& agg : c.aggregators) closed += agg->stats().rounds_completed;
  REQUIRE(closed == 5 * keys.size());
  REQUIRE(c.Finish().ok());
}

TEST_CASE("aggregator: the sgd rule set by the master updates the weights exactly",
          "[tier][aggregator]") {
  InProcCluster c(1, 2);
  REQUIRE(c.Start().ok());
  RuleSpec rule;
  rule.rule = UpdateRule::kSgd;
  rule.learning_rate = 0.5;
  REQUIRE(c.kv[0]->Wait(c.kv[0]->SetRule(rule)).ok());
  const std::vector<Key> keys = {7};
  std::vector<float> w = {1.0f, 2.0f, 4.0f, 8.0f};
  REQUIRE(c.kv[0]->Wait(c.kv[0]->Init(keys, w)).ok());
  for (int round = 1; round <= 3; ++round) {
    std::vector<float> g0 = {1, 1, 1, 1}, g1 = {0.5f, 0, -1, 2};
    std::vector<float> out0, out1;
    int t0 = c.kv[0]->PushPull(keys, g0, &out0);
    int t1 = c.kv[1]->PushPull(keys, g1, &out1);
    REQUIRE(c.kv[0]->Wait(t0).ok());
    REQUIRE(c.kv[1]->Wait(t1).ok());
    for (size_t i = 0; i < w.size(); ++i) w[i] -= 0.5f * (g0[i] + g1[i]);
    REQUIRE(out0 == w);
    REQUIRE(out1 == w);
  }
  REQUIRE(c.Finish().ok());
}

TEST_CASE("wan uplink: a batch that nothing else sends leaves on its own deadline",
          "[tier][aggregator][wan]") {
  // The uplink pushes into a one-server tier as a party server would into
  // the global tier; the batch is far below coalesce_bytes, and neither
  // Flush() nor SendReady() is called: only its timer can send it.
  InProcCluster c(1, 1);
  REQUIRE(c.Start().ok());
  // std::mutex, not absl::Mutex: TSan cannot see Debian's absl (core/base/mutex.h).
  std::mutex mu;
  std::condition_variable cv;
  bool answered = false;
  absl::Status status;
  std::vector<float> got;
  const WanOptions options{size_t{1} << 20, absl::Milliseconds(20), false, size_t{8} << 20};
  WanUplink uplink(c.kv[0]->client(), options, WanPolicy{},
                   [&](const WanUplink::Batch&, uint32_t, bool, DType, const absl::Status& s,
                       std::vector<Buffer>& results) {
                     std::lock_guard<std::mutex> lock(mu);
                     status = s;
                     if (results.size() == 1) {
                       got.resize(results[0].size() / sizeof(float));
                       std::memcpy(got.data(), results[0].data(), results[0].size());
                     }
                     answered = true;
                     cv.notify_all();
                   });
  const std::vector<float> sum = {1, 2, 3};
  const absl::Time queued = absl::Now();
  uplink.Enqueue({Key{0}, 1, DType::kFloat32, Buffer::CopyOf(sum.data(), sum.size() * sizeof(float)),
                  /*fetch=*/false, 1});
  {
    std::unique_lock<std::mutex> lock(mu);
    REQUIRE(cv.wait_for(lock, std::chrono::seconds(20), [&] { return answered; }));
    REQUIRE(absl::Now() - queued >= absl::Milliseconds(20));
    REQUIRE(status.ok());
    REQUIRE(got == sum);
  }
  uplink.Stop();
  REQUIRE(c.Finish().ok());
}
