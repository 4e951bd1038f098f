#include "roles/roles.h"

#include <sys/resource.h>

#include <cstdio>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/base/log.h"
#include "core/cluster/tier_node.h"
#include "core/cluster/tier_scheduler.h"
#include "core/kv/kv_client.h"
#include "core/kv/kv_server.h"
#include "core/kv/aggregator.h"
#include "roles/report.h"
#include "roles/tier_setup.h"

namespace geops {

namespace {

// Peak resident memory of this process, for the bounded-memory checks.
long MaxRssKb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss;
}

}  // namespace

void PrintTierStats(const Config& c, const Tier& tier) {
  const TransportStats& s = tier.stats();
  // One parsable line per tier on stdout: the launcher adds them up.
  report::TierStats r;
  r.role = c.Describe();
  r.tier = tier.name();
  r.id = tier.my_id();
  r.sent_bytes = s.bytes_sent.load();
  r.recv_bytes = s.bytes_received.load();
  r.sent_msgs = s.messages_sent.load();
  r.recv_msgs = s.messages_received.load();
  r.malformed = s.malformed.load();
  r.copied_bytes = s.bytes_copied.load();
  r.staged_bytes = s.bytes_staged.load();
  r.registrations = s.registrations.load();
  r.rejected = tier.rejected();
  r.max_rss_kb = static_cast<uint64_t>(MaxRssKb());
  std::printf("%s\n", r.Format().c_str());
  std::fflush(stdout);
}

absl::Status RunScheduler(const Config& c) {
  bool global = c.global_role == Role::kScheduler;
  auto tier = TierScheduler::Create(MakeTierOptions(c, global, Role::kScheduler));
  if (!tier.ok()) return tier.status();
  if (auto s = (*tier)->Start(); !s.ok()) return s;
  absl::Status done = (*tier)->WaitDone();
  if (done.ok()) log::Info("%s tier: every node exited; shutting down", (*tier)->name());
  PrintTierStats(c, **tier);
  return done;
}

namespace {

// A failure in one tier stops the other: a party server whose workers died
// must not leave the global tier waiting for its contribution.
void LinkAborts(TierNode& a, TierNode& b) {
  a.add_abort_handler([&b, label = a.label()](const std::string& why) {
    b.Abort(absl::StrCat(label, " tier: ", why));
  });
  b.add_abort_handler([&a, label = b.label()](const std::string& why) {
    a.Abort(absl::StrCat(label, " tier: ", why));
  });
}

int CountTrainers(const Tier& tier) {
  int n = 0;
  for (const auto& w : tier.Members(Role::kWorker)) n += w.trains;
  return n;
}

}  // namespace

absl::Status RunServer(const Config& c) {
  const bool has_global = c.in_global_tier();
  const bool top = c.global_role != Role::kWorker;  // global server or single tier

  // Declared so that the tiers (and their receive threads) go first.
  std::unique_ptr<Aggregator> agg;
  std::unique_ptr<KVClient> upstream;
  std::unique_ptr<KVServer> global_server, local_server;
  std::unique_ptr<TierNode> global, local;
  // Runs first on every return: both tiers' threads are joined before any
  // of the objects they call into (the other tier included) is destroyed.
  struct StopTiers {
    std::unique_ptr<TierNode>& global;
    std::unique_ptr<TierNode>& local;
    std::unique_ptr<Aggregator>& agg;
    ~StopTiers() {
      if (global) global->Stop();
      if (local) local->Stop();
      if (agg) agg->Stop();
    }
  } stop_tiers{global, local, agg};

  if (has_global) {
    auto t = TierNode::Create(MakeTierOptions(c, true, top ? Role::kServer : Role::kWorker));
    if (!t.ok()) return t.status();
    global = std::move(*t);
  }
  TierOptions lo = MakeTierOptions(c, false, Role::kServer);
  auto lt = TierNode::Create(lo);
  if (!lt.ok()) return lt.status();
  local = std::move(*lt);

  if (global && !top) upstream = std::make_unique<KVClient>(*global);
  AggregatorOptions ao;
  ao.uplink.coalesce_bytes = c.wan_coalesce_bytes;
  ao.uplink.coalesce_delay = c.wan_coalesce_delay;
  ao.uplink.priority = c.wan_priority;
  ao.uplink.window_bytes = c.wan_window_bytes;
  // The WAN policies act on the global tier only; a party's own tier
  // stays exact, synchronous and in full precision.
  ao.policy = c.wan_policy();
  if (!global) ao.policy.wan_topk = 0;
  ao.policy.wan_mixed = global && top && c.wan_mixed;
  if (!global || top) ao.policy.hfa_k2 = 0;
  ao.global_tier = global != nullptr;
  if (global && top) {
    // GeoMX semantics: with DMLC_ENABLE_CENTRAL_WORKER=0 the central party's
    // workers may push, but only the parties' sums count.
    ao.counts = [l = local.get()](const KVRequest& r) {
      if (r.via->tier().name() != "local") return true;
      const NodeInfo* n = l->Find(r.sender);
      return n != nullptr && n->trains;
    };
  }
  agg = MakeAggregator(upstream.get(), std::move(ao));
  // A party server sends its batched sums once it has read every message
  // its workers sent so far (and at the latest on its own deadline).
  if (upstream) local->set_idle_handler([a = agg.get()] { a->Flush(); });
  auto handle = [a = agg.get()](KVRequest&& r) { a->Handle(std::move(r)); };
  auto rule = [a = agg.get()](const RuleSpec& r) { return a->SetRule(r); };
  local_server = std::make_unique<KVServer>(*local, handle, rule);
  if (global && top) global_server = std::make_unique<KVServer>(*global, handle, rule);
  if (global) LinkAborts(*global, *local);
  // A STATS request (a benchmark measuring WAN bytes per round) is answered
  // with both tiers' counters, whichever tier it came on.
  auto both = [l = local.get(), g = global.get()] {
    return g ? absl::StrCat(l->StatsText(), " ", g->StatsText()) : l->StatsText();
  };
  local_server->set_stats_handler(both);
  auto rule_in_force = [a = agg.get()] { return a->rule(); };
  local_server->set_rule_getter(rule_in_force);
  if (global_server) {
    global_server->set_stats_handler(both);
    global_server->set_rule_getter(rule_in_force);
  }

  if (global) {
    if (!top) {
      // The party is identified by its scheduler's address: unique per
      // party and the same for all of the party's servers.
      global->mutable_self().party =
          absl::StrFormat("%s:%d", c.local->scheduler_addr, c.local->scheduler_port);
    }
    if (auto s = global->Start(); !s.ok()) {
      // Our party must not wait out its start-up timeout for a server that
      // will never come.
      local->AbortUnstarted(absl::StrFormat("the %s of %s could not join the global tier: %s",
                                            c.Describe(), local->label(), s.message()));
      return s;
    }
    // A global server keeps its global rank in the central party, so the
    // key range it owns is the same in both tiers.
    if (top) local->mutable_self().rank_hint = global->my_rank();
  }
  if (auto s = local->Start(); !s.ok()) {
    if (global) global->Abort(absl::StrCat(local->label(), " tier failed to start: ", s.message()));
    return s;
  }

  int expected = CountTrainers(*local);
  if (global && top) {
    std::set<std::string> parties;
    for (const auto& w : global->Members(Role::kWorker)) parties.insert(w.party);
    expected += static_cast<int>(parties.size());
    log::Info("global server rank %d: %d parties + %d central workers contribute per round",
              global->my_rank(), parties.size(), CountTrainers(*local));
  } else {
    log::Info("server rank %d: %d workers contribute per round%s", local->my_rank(), expected,
              top ? "" : "; party sums go to the global tier");
  }
  if (expected == 0) {
    std::string why = "no training worker contributes: with DMLC_ENABLE_CENTRAL_WORKER=0 the "
                      "central party needs parties (DMLC_NUM_GLOBAL_WORKER) to train";
    local->Abort(why);
    return absl::FailedPreconditionError(why);
  }
  agg->Start(expected);

  absl::Status status = local->WaitTerminate();
  if (status.ok() && global && top) status = global->WaitTerminate();
  // Every worker we serve is gone; leave the global tier first so that the
  // global servers see this party finish, then the party itself.
  if (status.ok() && global) status = global->Finalize();
  if (status.ok()) status = local->Finalize();
  auto st = agg->stats();
  log::Info("server done: %d key-rounds aggregated, %d bytes summed, %d duplicate pushes "
            "ignored, %d requests resent upstream",
            st.rounds_completed, st.bytes_aggregated, st.duplicates,
            upstream ? upstream->resent() : 0);
  PrintTierStats(c, *local);
  if (global) PrintTierStats(c, *global);
  return status;
}

}  // namespace geops
