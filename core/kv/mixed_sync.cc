// MixedSync on a top server (GEOPS_WAN_SYNC=mixed): each party's sum is
// applied to the weights when it arrives, and a pull is answered with the
// weights as they are once its round is at most the staleness bound ahead
// of the slowest contributor's. Part of GlobalAggregator.
#include "absl/strings/str_format.h"
#include "core/kv/dtype_ops.h"
#include "core/kv/global_aggregator.h"

namespace geops {

void GlobalAggregator::ApplyMixed(KVRequest& req, AggregationTable& table, uint64_t contributor) {
  KVServer* via = req.via;
  const RuleSpec r = rule();
  if (r.rule != UpdateRule::kSgd) {
    via->RespondError(req, "GEOPS_WAN_SYNC=mixed needs the sgd rule (the master worker sets it)");
    req.keys.clear();
    return;
  }
  for (size_t i = 0; i < req.keys.size(); ++i) {
    const Key key = req.keys[i];
    uint64_t& applied = mixed_applied_[{key, contributor}];
    if (req.round <= applied) {  // a resent push: applied once already
      ++engine_.stats().duplicates;
      continue;
    }
    auto weights = table.Latest(key);
    if (!weights || weights->value.size() != req.values[i].size() ||
        table.DTypeOf(key) != req.dtype) {
      via->RespondError(req, absl::StrFormat("key %d: MixedSync applies pushes to the weights the "
                                             "master worker initialised (same size and dtype)",
                                             key));
      req.keys.clear();
      return;
    }
    Buffer next = Buffer::CopyOf(req.values[i].data(), req.values[i].size());
    if (auto s = ApplySgd(req.dtype, r.learning_rate, weights->value, next); !s.ok()) {
      via->RespondError(req, std::string(s.message()));
      req.keys.clear();
      return;
    }
    applied = req.round;
    engine_.stats().bytes_aggregated += req.values[i].size();
    ++engine_.stats().rounds_completed;
    // Versions count applications, so every one is a new published value.
    const uint64_t version = weights->round + 1;
    const bool slice = req.flags & msgflag::kSlice;
    engine_.Publish(key, version, req.dtype, std::move(next), slice);
    MaybeCheckpoint(key, slice, version);
  }
  uint64_t& latest = contributor_round_[contributor];
  latest = std::max(latest, req.round);
  ReleaseStale();
}

bool GlobalAggregator::WithinStaleness(uint64_t round, uint32_t staleness) {
  // Contributors not heard from yet are at round 0.
  uint64_t slowest = 0;
  if (static_cast<int>(contributor_round_.size()) >= engine_.expected()) {
    slowest = UINT64_MAX;
    for (const auto& [who, r] : contributor_round_) slowest = std::min(slowest, r);
  }
  return round <= slowest + staleness;
}

void GlobalAggregator::ReleaseStale() {
  const uint32_t staleness = policy().wan_staleness;
  for (auto it = stale_.begin(); it != stale_.end();) {
    Parked& p = **it;
    if (!WithinStaleness(p.req.round, staleness)) {
      ++it;
      continue;
    }
    AggregationTable& table = engine_.table(p.req.flags & msgflag::kSlice);
    p.values.clear();
    bool ok = true;
    for (Key key : p.req.keys) {
      auto v = table.Latest(key);
      if (!v) {
        p.req.via->RespondError(p.req, absl::StrFormat("key %d has no value yet", key));
        ok = false;
        break;
      }
      p.values.push_back(v->value);
    }
    if (ok) Reply(p);
    it = stale_.erase(it);
  }
}

Buffer GlobalAggregator::MixedDown(uint64_t who, Key key, const Buffer& now, bool sparse,
                                   const WanPolicy& p) {
  Buffer& last = mixed_sent_[{who, key}];
  if (!sparse || last.size() != now.size()) {
    // The whole value (the round-0 fetch, or a first answer): the party
    // holds exactly `now` afterwards.
    last = now;
    return sparse ? EncodeDense(now, p.wan_container_dtype(), false) : now;
  }
  Buffer change = Buffer::CopyOf(now.data(), now.size());
  Subtract(DType::kFloat32, change, last);
  last = now;
  auto ef = mixed_down_ef_.try_emplace(who, p.wan_topk, p.wan_container_dtype()).first;
  return ef->second.Compress(key, change, /*accumulate=*/true);
}

}  // namespace geops
