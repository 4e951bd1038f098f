#include "core/kv/party_aggregator.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "core/base/log.h"
#include "core/kv/dtype_ops.h"
#include "core/kv/half.h"
#include "core/kv/sparse.h"

namespace geops {

PartyAggregator::PartyAggregator(KVClient& upstream, AggregatorOptions options)
    : upstream_(upstream),
      engine_({[this](KVRequest&& r) {
                 engine_.AssertHeld();
                 HandleLocked(std::move(r));
               },
               [this](Parked& p) {
                 engine_.AssertHeld();
                 Reply(p);
               }}),
      policy_(options.policy),
      uplink_(upstream, options.uplink, options.policy,
              [this](const WanUplink::Batch& batch, uint32_t flags, bool sparse, DType wire,
                     const absl::Status& s, std::vector<Buffer>& results) {
                OnResult(batch, flags, sparse, wire, s, results);
              }) {}

absl::Status PartyAggregator::SetRule(const RuleSpec&) {
  return absl::FailedPreconditionError(
      "the update rule is set on the global servers, not on a party's server");
}

WanPolicy PartyAggregator::policy() const {
  MutexLock lock(&mu_);
  return policy_;
}

void PartyAggregator::HandleLocked(KVRequest&& req) {
  KVServer* via = req.via;
  if (req.flags & msgflag::kSlice) {
    via->RespondError(req, "a party's server takes whole keys; slices go to global servers");
    return;
  }
  if (IsHalf(req.dtype)) {
    via->RespondError(req, absl::StrFormat("%s values are for the WAN tier; a party's server "
                                           "takes its workers' float32",
                                           DTypeName(req.dtype)));
    return;
  }
  if (req.flags & msgflag::kSparse) {
    via->RespondError(req, "compressed values are for the WAN tier; a party's server takes its "
                           "workers' float32");
    return;
  }
  if (req.init()) {
    ForwardInit(std::move(req));
    return;
  }
  if (req.push()) {
    if (req.round == 0) {
      via->RespondError(req, "a push must be for round 1 or later (round 0 is the initial value)");
      return;
    }
    auto complete = [&](Key key, Buffer total) ABSL_NO_THREAD_SAFETY_ANALYSIS {
      Complete(key, req.round, req.dtype, std::move(total));
    };
    if (!engine_.Sum(req, SumEngine::ContributorOf(req), complete)) return;
    if (!req.pull()) {
      via->Respond(req, {}, req.dtype);
      return;
    }
  }
  // A pull (or the pull half of a push-pull): answer now or park per key.
  auto parked = std::make_shared<Parked>();
  parked->values.resize(req.keys.size());
  parked->outstanding = req.keys.size();
  parked->dtype = req.dtype;
  const uint64_t round = req.round;
  const DType dtype = req.dtype;
  std::vector<Key> first = engine_.PullOrPark(std::move(parked), std::move(req));
  // Round 0 never closes here: the initial value is fetched from the
  // global tier, once per key however many workers ask.
  if (round != 0) return;
  for (Key key : first) Enqueue({key, 0, dtype, Buffer(), /*fetch=*/true, 0});
}

void PartyAggregator::Reply(Parked& p) {
  p.req.via->Respond(p.req, std::move(p.values), p.dtype);
}

void PartyAggregator::ForwardInit(KVRequest&& req) {
  // A party worker that initialises (ps-lite style) still initialises the
  // global copy: pass it up and acknowledge when it is stored.
  auto keys = std::make_shared<std::vector<Key>>(req.keys);
  auto rounds = std::make_shared<std::vector<uint64_t>>(req.keys.size(), 0);
  auto shared = std::make_shared<KVRequest>(std::move(req));
  engine_.Defer([this, keys, rounds, shared] {
    upstream_.Submit({*keys, shared->values, *rounds, shared->dtype,
                      msgflag::kPush | msgflag::kInit, {}, true},
                     [shared](const absl::Status& s, std::vector<Buffer>&) {
                       if (s.ok()) shared->via->Respond(*shared, {}, shared->dtype);
                       else shared->via->RespondError(*shared, std::string(s.message()));
                     });
  });
}

void PartyAggregator::Complete(Key key, uint64_t round, DType dtype, Buffer total) {
  if (policy_state_ != PolicyState::kKnown) {
    // The first sum: the master worker may have chosen the WAN policy.
    pending_completes_.push_back({key, round, dtype, std::move(total)});
    if (policy_state_ == PolicyState::kUnknown) AskPolicy();
    return;
  }
  ++engine_.stats().rounds_completed;
  const uint64_t k2 = policy().hfa_k2;
  if (k2 > 0 && round % k2 != 0) {
    // HFA: a party-level aggregation; the workers' average stays here.
    if (auto s = Divide(dtype, engine_.table(false).expected(), total); !s.ok()) {
      engine_.FailKey(key, std::string(s.message()));
      return;
    }
    engine_.Publish(key, round, dtype, std::move(total));
    return;
  }
  // Exactly one contribution per party per key and round leaves here.
  const uint64_t global_round = k2 > 0 ? round / k2 : round;
  Enqueue({key, global_round, dtype, std::move(total), /*fetch=*/false, round});
}

void PartyAggregator::Enqueue(WanUplink::Outgoing o) {
  uplink_.Enqueue(std::move(o));
  engine_.Defer([this] { uplink_.SendReady(); });
}

void PartyAggregator::AskPolicy() {
  policy_state_ = PolicyState::kAsking;
  engine_.Defer([this] {
    upstream_.QueryRule([this](const absl::Status& s, std::vector<Buffer>& answers) {
      engine_.Lock();
      absl::StatusOr<RuleSpec> r = absl::UnavailableError(s.ok() ? "no answer" : s.ToString());
      if (s.ok() && !answers.empty()) r = DecodeRule(answers[0]);
      if (!r.ok()) {
        log::Warn("could not read the cluster's WAN policy from the global servers (%s): keeping "
                  "this server's variables",
                  r.status().message());
      } else if (r->policy_set) {
        AdoptPolicy(*r);
      }
      policy_state_ = PolicyState::kKnown;
      std::vector<Completed> waiting = std::move(pending_completes_);
      pending_completes_.clear();
      for (Completed& c : waiting) Complete(c.key, c.round, c.dtype, std::move(c.total));
      engine_.Unlock();
    });
  });
}

void PartyAggregator::AdoptPolicy(const RuleSpec& r) {
  // A party server takes what it sends with; MixedSync is the global
  // servers'.
  WanPolicy p;
  {
    MutexLock lock(&mu_);
    policy_.wan_topk = r.wan_topk;
    policy_.wan_topk_min_elems = r.wan_topk_min_elems;
    policy_.wan_dtype = r.wan_dtype;
    policy_.hfa_k2 = std::min<uint32_t>(r.hfa_k2, 1000000);
    p = policy_;
  }
  uplink_.SetPolicy(p);
  log::Info("WAN policy from the master worker: %s%s%s%s",
            p.wan_topk > 0 ? absl::StrFormat("top-k %g of keys >= %d elements, ", p.wan_topk,
                                             p.wan_topk_min_elems)
                           : std::string("dense, "),
            IsHalf(p.wan_dtype) ? DTypeName(p.wan_dtype) : "float32", std::string(),
            p.hfa_k2 > 0 ? absl::StrFormat(", HFA K2=%d", p.hfa_k2) : std::string());
}

void PartyAggregator::OnResult(const WanUplink::Batch& batch, uint32_t flags, bool sparse,
                               DType wire, const absl::Status& s, std::vector<Buffer>& results) {
  engine_.Lock();
  const bool pull = flags & msgflag::kPull;
  for (size_t j = 0; j < batch->size(); ++j) {
    const WanUplink::Outgoing& o = (*batch)[j];
    if (!s.ok() || (pull && (results.size() != batch->size() || (!o.fetch && results[j].empty())))) {
      engine_.FailKey(o.key, absl::StrFormat("global tier: %s", s.ToString()));
    } else if (pull && sparse) {
      auto v = DecodeResult(o.key, results[j]);
      if (v.ok()) engine_.Publish(o.key, o.local_round, o.dtype, std::move(*v));
      else engine_.FailKey(o.key, absl::StrFormat("global tier: %s", v.status().message()));
    } else if (pull) {
      engine_.Publish(o.key, o.local_round, o.dtype,
                      wire == o.dtype ? std::move(results[j]) : Widen(wire, results[j]));
    }
  }
  engine_.Unlock();
}

absl::StatusOr<Buffer> PartyAggregator::DecodeResult(Key key, const Buffer& wire) {
  auto info = InspectSparse(wire);
  if (!info.ok()) return info.status();
  // The key's size is that of its initial value (fetched in round 0).
  auto last = engine_.table(false).Latest(key);
  if (!last || last->value.size() != info->elements * sizeof(float)) {
    return absl::DataLossError(absl::StrFormat(
        "key %d: a compressed result of %d elements for a key of %d bytes", key, info->elements,
        last ? last->value.size() : 0));
  }
  Buffer out = info->accumulate ? Buffer::CopyOf(last->value.data(), last->value.size())
                                : Buffer::Allocate(last->value.size());
  if (auto s = DecodeSparse(wire, out); !s.ok()) return s;
  return out;
}

}  // namespace geops
