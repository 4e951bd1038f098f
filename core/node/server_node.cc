#include "core/node/server_node.h"

#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/base/log.h"
#include "core/node/open_tier.h"

namespace geops {
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

// What `c` asks of an aggregator. The WAN policies act on the global tier
// only; a party's own tier stays exact, synchronous and in full precision.
AggregatorOptions AggregationOf(const Config& c, bool global, bool top) {
  AggregatorOptions o;
  o.uplink.coalesce_bytes = c.wan_coalesce_bytes;
  o.uplink.coalesce_delay = c.wan_coalesce_delay;
  o.uplink.priority = c.wan_priority;
  o.uplink.window_bytes = c.wan_window_bytes;
  o.policy = c.wan_policy();
  if (!global) o.policy.wan_topk = 0;
  o.policy.wan_mixed = global && top && c.wan_mixed;
  if (!global || top) o.policy.hfa_k2 = 0;
  o.global_tier = global;
  return o;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ServerNode>> ServerNode::Create(const Config& c, TierOptions local,
                                                               std::optional<TierOptions> global) {
  std::unique_ptr<ServerNode> n(new ServerNode(c));
  n->top_ = c.global_role != Role::kWorker;
  if (global) {
    auto t = OpenTierNode(std::move(*global));
    if (!t.ok()) return t.status();
    n->global_ = std::move(*t);
  }
  auto lt = OpenTierNode(std::move(local));
  if (!lt.ok()) return lt.status();
  n->local_ = std::move(*lt);
  n->Assemble();
  return n;
}

ServerNode::~ServerNode() {
  // Both tiers' threads are joined before any of the objects they call
  // into (the other tier included) is destroyed; then nothing more goes
  // upstream.
  if (global_) global_->Stop();
  if (local_) local_->Stop();
  if (agg_) agg_->Stop();
}

void ServerNode::Assemble() {
  const bool global = global_ != nullptr;
  if (global && !top_) upstream_ = std::make_unique<KVClient>(*global_);
  AggregatorOptions ao = AggregationOf(config_, global, top_);
  if (global && top_) {
    // GeoMX semantics: with DMLC_ENABLE_CENTRAL_WORKER=0 the central party's
    // workers may push, but only the parties' sums count.
    ao.counts = [l = local_.get()](const KVRequest& r) {
      if (r.via->tier().global()) return true;
      const NodeInfo* n = l->Find(r.sender);
      return n != nullptr && n->trains;
    };
  }
  agg_ = MakeAggregator(upstream_.get(), std::move(ao));
  // A party server sends its batched sums once it has read every message
  // its workers sent so far (and at the latest on the uplink's deadline).
  if (upstream_) local_->set_idle_handler([a = agg_.get()] { a->Flush(); });
  auto handle = [a = agg_.get()](KVRequest&& r) { a->Handle(std::move(r)); };
  auto rule = [a = agg_.get()](const RuleSpec& r) { return a->SetRule(r); };
  local_server_ = std::make_unique<KVServer>(*local_, handle, rule);
  if (global && top_) global_server_ = std::make_unique<KVServer>(*global_, handle, rule);
  if (global) LinkAborts(*global_, *local_);
  // A STATS request (a benchmark measuring WAN bytes per round) is answered
  // with both tiers' counters, whichever tier it came on.
  auto both = [l = local_.get(), g = global_.get()] {
    return g ? absl::StrCat(l->StatsText(), " ", g->StatsText()) : l->StatsText();
  };
  auto rule_in_force = [a = agg_.get()] { return a->rule(); };
  for (KVServer* s : {local_server_.get(), global_server_.get()}) {
    if (s == nullptr) continue;
    s->set_stats_handler(both);
    s->set_rule_getter(rule_in_force);
  }
}

int ServerNode::CountContributors() const {
  int expected = CountTrainers(*local_);
  if (global_ && top_) {
    std::set<std::string> parties;
    for (const auto& w : global_->Members(Role::kWorker)) parties.insert(w.party);
    expected += static_cast<int>(parties.size());
    log::Info("global server rank %d: %d parties + %d central workers contribute per round",
              global_->my_rank(), parties.size(), CountTrainers(*local_));
  } else {
    log::Info("server rank %d: %d workers contribute per round%s", local_->my_rank(), expected,
              top_ ? "" : "; party sums go to the global tier");
  }
  return expected;
}

absl::Status ServerNode::Run(const std::function<void()>& report) {
  const Config& c = config_;
  if (global_) {
    if (!top_) {
      // The party is identified by its scheduler's address: unique per
      // party and the same for all of the party's servers.
      global_->mutable_self().party =
          absl::StrFormat("%s:%d", c.local->scheduler_addr, c.local->scheduler_port);
    }
    if (auto s = global_->Start(); !s.ok()) {
      // Our party must not wait out its start-up timeout for a server that
      // will never come.
      local_->AbortUnstarted(absl::StrFormat("the %s of %s could not join the global tier: %s",
                                             c.Describe(), local_->label(), s.message()));
      return s;
    }
    // A global server keeps its global rank in the central party, so the
    // key range it owns is the same in both tiers.
    if (top_) local_->mutable_self().rank_hint = global_->my_rank();
  }
  if (auto s = local_->Start(); !s.ok()) {
    if (global_) {
      global_->Abort(absl::StrCat(local_->label(), " tier failed to start: ", s.message()));
    }
    return s;
  }
  const int expected = CountContributors();
  if (expected == 0) {
    std::string why = "no training worker contributes: with DMLC_ENABLE_CENTRAL_WORKER=0 the "
                      "central party needs parties (DMLC_NUM_GLOBAL_WORKER) to train";
    local_->Abort(why);
    return absl::FailedPreconditionError(why);
  }
  if (top_ && !c.checkpoint_dir.empty()) {
    const TierNode& tier = global_ ? *global_ : *local_;
    CheckpointOptions co;
    co.dir = c.checkpoint_dir;
    co.every_rounds = c.checkpoint_rounds;
    co.every = c.checkpoint_every;
    co.keep = c.checkpoint_keep;
    const int servers = static_cast<int>(tier.Members(Role::kServer).size());
    if (auto s = agg_->EnableCheckpoints(co, tier.my_rank(), servers); !s.ok()) {
      const std::string why = absl::StrCat(global_ ? "global server rank " : "server rank ",
                                           tier.my_rank(), " cannot resume: ", s.message());
      if (global_) global_->Abort(why);
      local_->Abort(why);
      return absl::FailedPreconditionError(why);
    }
  }
  agg_->Start(expected);

  absl::Status status = local_->WaitTerminate();
  if (status.ok() && global_ && top_) status = global_->WaitTerminate();
  // The end of an orderly job is a cut every key has reached: a job started
  // later with the same directory continues from exactly here.
  if (status.ok() && top_) {
    if (auto s = agg_->CheckpointNow(); !s.ok()) status = s;
  }
  // Every worker we serve is gone; leave the global tier first so that the
  // global servers see this party finish, then the party itself.
  if (status.ok() && global_) status = global_->Finalize();
  if (status.ok()) status = local_->Finalize();
  auto st = agg_->stats();
  log::Info("server done: %d key-rounds aggregated, %d bytes summed, %d duplicate pushes "
            "ignored, %d requests resent upstream",
            st.rounds_completed, st.bytes_aggregated, st.duplicates,
            upstream_ ? upstream_->resent() : 0);
  if (report) report();
  return status;
}

}  // namespace geops
