// A whole single tier in one process over InProcTransport: a scheduler, S
// servers running the real Aggregator behind KVServer, and W workers. For
// unit tests of the tier protocol and of the servers' aggregation without
// sockets or child processes.
#pragma once

#include <memory>
#include <thread>
#include <vector>

#include "core/cluster/tier_node.h"
#include "core/cluster/tier_scheduler.h"
#include "core/kv/aggregator.h"
#include "core/kv/kv_server.h"
#include "core/kv/kv_worker.h"
#include "core/transport/inproc_transport.h"

namespace geops::testing {

inline TierOptions InProcOptions(Role role, int servers, int workers, int scheduler_port) {
  TierOptions o;
  o.label = "inproc";
  o.role = role;
  o.cluster.scheduler_host = o.cluster.scheduler_addr = "127.0.0.1";
  o.cluster.scheduler_port = scheduler_port;
  o.cluster.num_servers = servers;
  o.cluster.num_workers = workers;
  o.startup_timeout = absl::Seconds(20);
  o.connect_timeout = absl::Seconds(20);
  return o;
}

class InProcCluster {
 public:
  InProcCluster(int servers, int workers) : servers_(servers), workers_(workers) {
    scheduler = Make<TierScheduler>(Role::kScheduler);
    for (int i = 0; i < servers; ++i) server_tiers.push_back(Make<TierNode>(Role::kServer));
    for (int i = 0; i < workers; ++i) {
      worker_tiers.push_back(Make<TierNode>(Role::kWorker));
      if (i == 0) worker_tiers.back()->mutable_self().master = true;
      kv.push_back(std::make_unique<KVWorker<float>>(*worker_tiers.back()));
    }
    for (auto& t : server_tiers) {
      auto agg = MakeAggregator(nullptr, AggregatorOptions{});
      Aggregator* a = agg.get();
      kv_servers.push_back(std::make_unique<KVServer>(
          *t, [a](KVRequest&& r) { a->Handle(std::move(r)); },
          [a](const RuleSpec& r) { return a->SetRule(r); }));
      aggregators.push_back(std::move(agg));
    }
  }
  ~InProcCluster() {
    // Receive threads first: they call into the servers and workers.
    for (auto* group : {&worker_tiers, &server_tiers}) {
      for (auto& t : *group) t->Stop();
    }
    if (scheduler) scheduler->Stop();
  }

  // Starts every tier (nodes block until the node table, so in parallel)
  // and every server's aggregation with one contribution per worker.
  absl::Status Start() {
    if (auto s = scheduler->Start(); !s.ok()) return s;
    std::vector<absl::Status> status(servers_ + workers_);
    std::vector<std::thread> threads;
    for (int i = 0; i < servers_ + workers_; ++i) {
      TierNode* t = i < servers_ ? server_tiers[i].get() : worker_tiers[i - servers_].get();
      threads.emplace_back([t, &status, i] { status[i] = t->Start(); });
    }
    for (auto& th : threads) th.join();
    for (const auto& s : status) {
      if (!s.ok()) return s;
    }
    for (auto& a : aggregators) a->Start(workers_);
    return absl::OkStatus();
  }

  // The orderly end: workers leave, servers see TERMINATE and leave, the
  // scheduler sees everyone gone.
  absl::Status Finish() {
    std::vector<std::thread> threads;
    std::vector<absl::Status> status(servers_ + workers_);
    for (int i = 0; i < workers_; ++i) {
      threads.emplace_back([&, i] { status[i] = worker_tiers[i]->Finalize(); });
    }
    for (int i = 0; i < servers_; ++i) {
      threads.emplace_back([&, i] {
        absl::Status s = server_tiers[i]->WaitTerminate();
        status[workers_ + i] = s.ok() ? server_tiers[i]->Finalize() : s;
      });
    }
    for (auto& th : threads) th.join();
    absl::Status done = scheduler->WaitDone();
    for (const auto& s : status) {
      if (!s.ok()) return s;
    }
    return done;
  }

  std::shared_ptr<InProcNetwork> network = std::make_shared<InProcNetwork>();
  std::unique_ptr<TierScheduler> scheduler;
  std::vector<std::unique_ptr<TierNode>> server_tiers, worker_tiers;
  std::vector<std::unique_ptr<Aggregator>> aggregators;
  std::vector<std::unique_ptr<KVServer>> kv_servers;
  std::vector<std::unique_ptr<KVWorker<float>>> kv;

 private:
  template <typename T>
  std::unique_ptr<T> Make(Role role) {
    return T::Create(InProcOptions(role, servers_, workers_, kSchedulerPort),
                     std::make_unique<InProcTransport>(network));
  }
  static constexpr int kSchedulerPort = 9000;
  const int servers_, workers_;
};

}  // namespace geops::testing
