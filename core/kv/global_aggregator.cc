#include "core/kv/global_aggregator.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "core/base/log.h"
#include "core/kv/dtype_ops.h"
#include "core/kv/half.h"

namespace geops {

GlobalAggregator::GlobalAggregator(AggregatorOptions options)
    : global_tier_(options.global_tier),
      counts_(std::move(options.counts)),
      engine_({[this](KVRequest&& r) {
                 engine_.AssertHeld();
                 HandleLocked(std::move(r));
               },
               [this](Parked& p) {
                 engine_.AssertHeld();
                 Reply(p);
               }}),
      policy_(options.policy),
      down_ef_(options.policy.wan_topk, options.policy.wan_container_dtype()) {}

WanPolicy GlobalAggregator::policy() const {
  MutexLock lock(&mu_);
  return policy_;
}

RuleSpec GlobalAggregator::rule() const {
  MutexLock lock(&mu_);
  return rule_;
}

absl::Status GlobalAggregator::SetRule(const RuleSpec& rule) {
  if (rule.rule == UpdateRule::kSgd && !(rule.learning_rate > 0)) {
    return absl::InvalidArgumentError("the sgd rule needs a learning rate > 0");
  }
  const bool mixed = rule.policy_set && global_tier_ ? rule.wan_mixed : policy().wan_mixed;
  if (rule.rule == UpdateRule::kAverage && rule.average_over == 0) {
    return absl::InvalidArgumentError(
        "the average rule needs the number of workers it averages over (DMLC_NUM_ALL_WORKER)");
  }
  if (mixed && rule.rule != UpdateRule::kSgd) {
    return absl::InvalidArgumentError(
        "GEOPS_WAN_SYNC=mixed applies each party's sum to the weights as it arrives: it needs "
        "the sgd rule");
  }
  engine_.Lock();
  {
    MutexLock lock(&mu_);
    rule_ = rule;
    rule_set_ = true;
    if (rule.policy_set && global_tier_) AdoptPolicy(rule);
  }
  engine_.Unlock();
  log::Info("update rule: %s lr=%g%s",
            rule.rule == UpdateRule::kSgd       ? "sgd"
            : rule.rule == UpdateRule::kAverage ? "average"
                                                : "sum",
            rule.learning_rate,
            rule.rule == UpdateRule::kAverage ? absl::StrFormat(" over %d workers", rule.average_over)
                                              : std::string());
  return absl::OkStatus();
}

void GlobalAggregator::AdoptPolicy(const RuleSpec& r) {
  // A top server takes what it applies; HFA is the party servers'.
  policy_.wan_topk = r.wan_topk;
  policy_.wan_topk_min_elems = r.wan_topk_min_elems;
  policy_.wan_dtype = r.wan_dtype;
  policy_.wan_mixed = r.wan_mixed;
  policy_.wan_staleness = std::min<uint32_t>(r.wan_staleness, 1000000);
  down_ef_ = ErrorFeedback(policy_.wan_topk, policy_.wan_container_dtype());
  const WanPolicy& p = policy_;
  log::Info("WAN policy from the master worker: %s%s%s%s",
            p.wan_topk > 0 ? absl::StrFormat("top-k %g of keys >= %d elements, ", p.wan_topk,
                                             p.wan_topk_min_elems)
                           : std::string("dense, "),
            IsHalf(p.wan_dtype) ? DTypeName(p.wan_dtype) : "float32",
            p.wan_mixed ? absl::StrFormat(", MixedSync (staleness %d)", p.wan_staleness)
                        : std::string(", synchronous"),
            std::string());
}

void GlobalAggregator::HandleLocked(KVRequest&& req) {
  KVServer* via = req.via;
  const bool slice = req.flags & msgflag::kSlice;
  AggregationTable& table = engine_.table(slice);
  for (Key key : req.keys) {
    if (std::string why = MixedSlicing(req, key); !why.empty()) {
      via->RespondError(req, why);
      return;
    }
  }
  // 16-bit values (a party server's GEOPS_WAN_DTYPE) are summed in float32
  // and answered in their own type.
  DType reply_as = DType::kNone;
  if (IsHalf(req.dtype)) {
    reply_as = req.dtype;
    for (Buffer& v : req.values) v = Widen(req.dtype, v);
    req.dtype = DType::kFloat32;
  }
  const bool reply_sparse = req.flags & msgflag::kSparse;
  if (reply_sparse && !DecodeRequest(req, table)) return;
  if (req.init()) {
    Init(req, table, slice);
    return;
  }
  const bool mixed = policy().wan_mixed;
  if (req.push() && (!Push(req, table, mixed) || !req.pull())) return;
  if (std::string why = WholeOfSlicedRestored(req); !why.empty()) {
    via->RespondError(req, why);
    return;
  }

  // A pull (or the pull half of a push-pull): answer now or park per key.
  auto parked = std::make_shared<Parked>();
  parked->values.resize(req.keys.size());
  parked->outstanding = req.keys.size();
  parked->dtype = req.dtype;
  parked->reply_as = reply_as;
  parked->reply_sparse = reply_sparse;
  if (mixed && req.round > 0) {
    // MixedSync: the weights as they are now, once this round is within
    // the staleness bound.
    for (size_t i = 0; i < req.keys.size(); ++i) {
      if (auto d = table.DTypeOf(req.keys[i])) parked->dtype = *d;
    }
    parked->req = std::move(req);
    stale_.push_back(std::move(parked));
    ReleaseStale();
    return;
  }
  engine_.PullOrPark(std::move(parked), std::move(req));
}

bool GlobalAggregator::Push(KVRequest& req, AggregationTable& table, bool mixed) {
  KVServer* via = req.via;
  const bool counts = !counts_ || counts_(req);
  if (!counts && !said_ignored_) {
    said_ignored_ = true;
    log::Warn("ignoring the pushes of the central party's workers: DMLC_ENABLE_CENTRAL_WORKER "
              "is 0 (as in GeoMX, only the parties' sums count)");
  }
  if (counts && req.round == 0) {
    via->RespondError(req, "a push must be for round 1 or later (round 0 is the initial value)");
    return false;
  }
  const uint64_t contributor = SumEngine::ContributorOf(req);
  if (counts && mixed) {
    ApplyMixed(req, table, contributor);
    if (req.keys.empty()) return false;  // answered with an error
  } else if (counts) {
    const bool slice = req.flags & msgflag::kSlice;
    auto complete = [&](Key key, Buffer total) ABSL_NO_THREAD_SAFETY_ANALYSIS {
      Complete(key, req.round, req.dtype, std::move(total), slice);
    };
    if (!engine_.Sum(req, contributor, complete)) return false;
  }
  if (!req.pull()) via->Respond(req, {}, req.dtype);
  return true;
}

void GlobalAggregator::Init(const KVRequest& req, AggregationTable& table, bool slice) {
  for (size_t i = 0; i < req.keys.size(); ++i) {
    if (auto d = table.DTypeOf(req.keys[i]); d && *d != req.dtype) {
      req.via->RespondError(req, absl::StrFormat("key %d is %s, initial values are %s",
                                                 req.keys[i], DTypeName(*d), DTypeName(req.dtype)));
      return;
    }
    if (restored_.count({req.keys[i], slice})) {
      if (!KeepRestored(req, i, slice)) return;
      continue;
    }
    // Owned copy: the init frame is a receive buffer, and sgd later reads
    // these weights for every round.
    engine_.Publish(req.keys[i], 0, req.dtype,
                    Buffer::CopyOf(req.values[i].data(), req.values[i].size()), slice);
  }
  req.via->Respond(req, {}, req.dtype);
}

void GlobalAggregator::Reply(Parked& p) {
  const WanPolicy pol = policy();
  const DType container = pol.wan_container_dtype();
  if (pol.wan_mixed && pol.wan_topk > 0 && p.req.via->tier().global() &&
      p.dtype == DType::kFloat32 && p.reply_as == DType::kNone) {
    // MixedSync: what this party holds is its own (see mixed_sent_).
    const uint64_t who = SumEngine::ContributorOf(p.req);
    std::vector<Buffer> out;
    for (size_t i = 0; i < p.values.size(); ++i) {
      const bool compress = p.reply_sparse && pol.wan_topk_applies(p.dtype, p.values[i].size());
      if (compress || !p.reply_sparse) {
        out.push_back(MixedDown(who, p.req.keys[i], p.values[i], compress, pol));
      } else {
        out.push_back(EncodeDense(p.values[i], container, false));
      }
    }
    p.req.via->Respond(p.req, std::move(out), p.dtype);
    return;
  }
  if (p.reply_sparse) {
    // The container of this very result when it was compressed, else the
    // whole value (round 0, small keys).
    std::vector<Buffer> out;
    for (size_t i = 0; i < p.values.size(); ++i) {
      auto it = down_.find(p.req.keys[i]);
      if (it != down_.end() && it->second.dense.data() == p.values[i].data() &&
          it->second.dense.size() == p.values[i].size()) {
        out.push_back(it->second.wire);
      } else {
        out.push_back(EncodeDense(p.values[i], container, false));
      }
    }
    p.req.via->Respond(p.req, std::move(out), DType::kFloat32);
    return;
  }
  if (p.reply_as == DType::kNone || p.dtype != DType::kFloat32) {
    p.req.via->Respond(p.req, std::move(p.values), p.dtype);
    return;
  }
  std::vector<Buffer> narrow;
  for (const Buffer& v : p.values) narrow.push_back(Narrow(p.reply_as, v));
  p.req.via->Respond(p.req, std::move(narrow), p.reply_as);
}

std::string GlobalAggregator::MixedSlicing(const KVRequest& req, Key key) {
  // Compressed values travel whole: the owner has the whole initial value.
  if (req.flags & msgflag::kSparse) return "";
  if (req.round == 0 && !(req.flags & msgflag::kSlice)) return "";
  // Round 0's whole value lives at the owner next to its slice; after
  // that a key is either sliced everywhere or nowhere.
  const bool slice = req.flags & msgflag::kSlice;
  auto other = slice ? engine_.table(false).Latest(key) : engine_.table(true).Latest(key);
  if (slice ? !(other && other->round > 0) : !engine_.table(true).DTypeOf(key)) return "";
  return absl::StrFormat(
      "key %d arrived %s but this server holds it %s: every process must see the same "
      "MXNET_KVSTORE_BIGARRAY_BOUND (and a pull after round 0 needs the key's size: push it, "
      "or give a destination)",
      key, slice ? "as a slice" : "whole", slice ? "whole" : "as slices");
}

bool GlobalAggregator::DecodeRequest(KVRequest& req, AggregationTable& table) {
  KVServer* via = req.via;
  if (req.dtype != DType::kFloat32) {
    via->RespondError(req, "compressed values must be float32");
    return false;
  }
  if (!req.push()) return true;
  for (size_t i = 0; i < req.keys.size(); ++i) {
    // The key's size comes from its initial value, never from the
    // container: a hostile header cannot make us allocate.
    auto known = table.Latest(req.keys[i]);
    if (!known) {
      via->RespondError(req, absl::StrFormat("key %d: a compressed push before the key's initial "
                                             "value",
                                             req.keys[i]));
      return false;
    }
    Buffer dense = Buffer::Allocate(known->value.size());
    if (auto s = DecodeSparse(req.values[i], dense); !s.ok()) {
      log::Warn("key %d from node %d: %s", req.keys[i], req.sender, s.message());
      via->RespondError(req, absl::StrFormat("key %d: %s", req.keys[i], s.message()));
      return false;
    }
    req.values[i] = std::move(dense);
  }
  return true;
}

void GlobalAggregator::Complete(Key key, uint64_t round, DType dtype, Buffer total, bool slice) {
  ++engine_.stats().rounds_completed;
  const RuleSpec r = rule();
  if (r.rule == UpdateRule::kAverage) {
    if (auto s = Divide(dtype, r.average_over, total); !s.ok()) {
      engine_.FailKey(key, std::string(s.message()));
      return;
    }
  }
  if (r.rule == UpdateRule::kSgd) {
    auto weights = engine_.table(slice).Latest(key);
    if (!weights || weights->value.size() != total.size()) {
      engine_.FailKey(key, absl::StrFormat("key %d: the sgd rule needs initial values of the "
                                           "same size (the master worker pushes them)",
                                           key));
      return;
    }
    // `total` is this table's own fresh buffer, so the update is written
    // into it: the previous weights may still be on their way to workers.
    if (auto s = ApplySgd(dtype, r.learning_rate, weights->value, total); !s.ok()) {
      engine_.FailKey(key, std::string(s.message()));
      return;
    }
  }
  if (!slice && policy().wan_topk_applies(dtype, total.size())) {
    CompressDown(key, dtype, total, r.rule);
  }
  engine_.Publish(key, round, dtype, std::move(total), slice);
  MaybeCheckpoint(key, slice, round);
}

void GlobalAggregator::CompressDown(Key key, DType dtype, const Buffer& result, UpdateRule rule) {
  // A rule with state (sgd weights, averaged models) sends the change since
  // the last result, which parties add to what they hold; the sum rule
  // sends the result itself. Either way what top-k leaves out this round
  // goes down in a later one (error feedback).
  const bool accumulate = rule != UpdateRule::kSum;
  Buffer change = result;
  if (accumulate) {
    auto before = engine_.table(false).Latest(key);
    if (!before || before->value.size() != result.size()) return;  // sent whole
    change = Buffer::CopyOf(result.data(), result.size());
    Subtract(dtype, change, before->value);
  }
  down_[key] = {result, down_ef_.Compress(key, change, accumulate)};
}

}  // namespace geops
