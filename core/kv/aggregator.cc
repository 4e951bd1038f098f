#include "core/kv/aggregator.h"

#include "absl/strings/str_format.h"
#include "core/base/log.h"
#include "core/kv/dtype_ops.h"
#include "core/kv/half.h"

namespace geops {

void Aggregator::Start(int expected) {
  std::unique_lock<std::mutex> lock(mu_);
  table_.set_expected(expected);
  slices_.set_expected(expected);
  expected_ = expected;
  started_ = true;
  std::vector<KVRequest> held = std::move(held_);
  held_.clear();
  for (auto& r : held) HandleLocked(std::move(r));
  RunDeferred(lock);
}

void Aggregator::Handle(KVRequest&& req) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!started_) {
    held_.push_back(std::move(req));
    return;
  }
  HandleLocked(std::move(req));
  RunDeferred(lock);
}

void Aggregator::RunDeferred(std::unique_lock<std::mutex>& lock) {
  while (!deferred_.empty()) {
    std::vector<std::function<void()>> work = std::move(deferred_);
    deferred_.clear();
    lock.unlock();
    for (auto& w : work) w();
    lock.lock();
  }
}

absl::Status Aggregator::SetRule(const RuleSpec& rule) {
  if (!top()) {
    return absl::FailedPreconditionError(
        "the update rule is set on the global servers, not on a party's server");
  }
  if (rule.rule == UpdateRule::kSgd && !(rule.learning_rate > 0)) {
    return absl::InvalidArgumentError("the sgd rule needs a learning rate > 0");
  }
  const bool mixed = rule.policy_set && wan_.global_tier ? rule.wan_mixed : wan_.mixed;
  if (rule.rule == UpdateRule::kAverage && rule.average_over == 0) {
    return absl::InvalidArgumentError(
        "the average rule needs the number of workers it averages over (DMLC_NUM_ALL_WORKER)");
  }
  if (mixed && rule.rule != UpdateRule::kSgd) {
    return absl::InvalidArgumentError(
        "GEOPS_WAN_SYNC=mixed applies each party's sum to the weights as it arrives: it needs "
        "the sgd rule");
  }
  std::lock_guard<std::mutex> lock(mu_);
  rule_ = rule;
  if (rule.policy_set && wan_.global_tier) AdoptPolicy(rule);
  log::Info("update rule: %s lr=%g%s",
            rule.rule == UpdateRule::kSgd       ? "sgd"
            : rule.rule == UpdateRule::kAverage ? "average"
                                                : "sum",
            rule.learning_rate,
            rule.rule == UpdateRule::kAverage ? absl::StrFormat(" over %d workers", rule.average_over)
                                              : std::string());
  return absl::OkStatus();
}

RuleSpec Aggregator::rule() const {
  std::lock_guard<std::mutex> lock(mu_);
  return rule_;
}

void Aggregator::AdoptPolicy(const RuleSpec& r) {
  wan_.topk = r.wan_topk;
  wan_.topk_min_elems = static_cast<int64_t>(std::min<uint64_t>(r.wan_topk_min_elems, INT64_MAX));
  wan_.wire_dtype = r.wan_dtype;
  if (top()) {
    wan_.mixed = r.wan_mixed;
    wan_.staleness = static_cast<int>(std::min<uint32_t>(r.wan_staleness, 1000000));
  } else {
    wan_.hfa_k2 = static_cast<int>(std::min<uint32_t>(r.hfa_k2, 1000000));
  }
  up_ef_ = ErrorFeedback(wan_.topk, ContainerDType());
  down_ef_ = ErrorFeedback(wan_.topk, ContainerDType());
  log::Info("WAN policy from the master worker: %s%s%s%s",
            wan_.topk > 0 ? absl::StrFormat("top-k %g of keys >= %d elements, ", wan_.topk,
                                            wan_.topk_min_elems)
                          : std::string("dense, "),
            IsHalf(wan_.wire_dtype) ? DTypeName(wan_.wire_dtype) : "float32",
            top() ? (wan_.mixed ? absl::StrFormat(", MixedSync (staleness %d)", wan_.staleness)
                                : std::string(", synchronous"))
                  : std::string(),
            !top() && wan_.hfa_k2 > 0 ? absl::StrFormat(", HFA K2=%d", wan_.hfa_k2) : std::string());
}

void Aggregator::AskPolicy() {
  policy_ = Policy::kAsking;
  deferred_.push_back([this] {
    upstream_->QueryRule([this](const absl::Status& s, std::vector<Buffer>& answers) {
      std::unique_lock<std::mutex> lock(mu_);
      absl::StatusOr<RuleSpec> r = absl::UnavailableError(s.ok() ? "no answer" : s.ToString());
      if (s.ok() && !answers.empty()) r = DecodeRule(answers[0]);
      if (!r.ok()) {
        log::Warn("could not read the cluster's WAN policy from the global servers (%s): keeping "
                  "this server's variables",
                  r.status().message());
      } else if (r->policy_set) {
        AdoptPolicy(*r);
      }
      policy_ = Policy::kKnown;
      std::vector<Completed> waiting = std::move(pending_completes_);
      pending_completes_.clear();
      for (Completed& c : waiting) Complete(c.key, c.round, c.dtype, std::move(c.total), c.slice);
      RunDeferred(lock);
    });
  });
}

Aggregator::Stats Aggregator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void Aggregator::HandleLocked(KVRequest&& req) {
  KVServer* via = req.via;
  const bool slice = req.flags & msgflag::kSlice;
  AggregationTable& table = TableOf(slice);
  if (slice && !top()) {
    via->RespondError(req, "a party's server takes whole keys; slices go to global servers");
    return;
  }
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
    if (!top()) {
      via->RespondError(req, absl::StrFormat("%s values are for the WAN tier; a party's server "
                                             "takes its workers' float32",
                                             DTypeName(req.dtype)));
      return;
    }
    reply_as = req.dtype;
    for (Buffer& v : req.values) v = Widen(req.dtype, v);
    req.dtype = DType::kFloat32;
  }
  const bool reply_sparse = req.flags & msgflag::kSparse;
  if (reply_sparse && !DecodeRequest(req, table)) return;
  if (req.init()) {
    if (!top()) {
      // A party worker that initialises (ps-lite style) still initialises
      // the global copy: pass it up and acknowledge when it is stored.
      auto keys = std::make_shared<std::vector<Key>>(req.keys);
      auto rounds = std::make_shared<std::vector<uint64_t>>(req.keys.size(), 0);
      auto shared = std::make_shared<KVRequest>(std::move(req));
      deferred_.push_back([this, keys, rounds, shared] {
        upstream_->Submit({*keys, shared->values, *rounds, shared->dtype,
                           msgflag::kPush | msgflag::kInit, {}, true},
                          [shared](const absl::Status& s, std::vector<Buffer>&) {
                            if (s.ok()) shared->via->Respond(*shared, {}, shared->dtype);
                            else shared->via->RespondError(*shared, std::string(s.message()));
                          });
      });
      return;
    }
    for (size_t i = 0; i < req.keys.size(); ++i) {
      if (auto d = table.DTypeOf(req.keys[i]); d && *d != req.dtype) {
        via->RespondError(req, absl::StrFormat("key %d is %s, initial values are %s",
                                               req.keys[i], DTypeName(*d), DTypeName(req.dtype)));
        return;
      }
      // Owned copy: the init frame is a receive buffer, and sgd later reads
      // these weights for every round.
      Publish(req.keys[i], 0, req.dtype,
              Buffer::CopyOf(req.values[i].data(), req.values[i].size()), slice);
    }
    via->Respond(req, {}, req.dtype);
    return;
  }

  if (req.push()) {
    const bool counts = !counts_ || counts_(req);
    if (!counts && !said_ignored_) {
      said_ignored_ = true;
      log::Warn("ignoring the pushes of the central party's workers: DMLC_ENABLE_CENTRAL_WORKER "
                "is 0 (as in GeoMX, only the parties' sums count)");
    }
    if (counts && req.round == 0) {
      via->RespondError(req, "a push must be for round 1 or later (round 0 is the initial value)");
      return;
    }
    const uint64_t contributor = ContributorOf(req);
    if (counts && top() && wan_.mixed) {
      ApplyMixed(req, table, contributor);
      if (req.keys.empty()) return;  // answered with an error
    }
    for (size_t i = 0; counts && !(top() && wan_.mixed) && i < req.keys.size(); ++i) {
      auto total = table.Add(req.keys[i], req.round, req.dtype, req.values[i], contributor);
      if (absl::IsAlreadyExists(total.status()) ||
          IsResentAfterClose(table, req.keys[i], req, total)) {
        // A resent request (its first copy was counted, or the round it
        // belongs to has closed since): nothing to add, and its pull half is
        // answered as usual.
        ++stats_.duplicates;
        continue;
      }
      if (!total.ok()) {
        via->RespondError(req, std::string(total.status().message()));
        return;
      }
      stats_.bytes_aggregated += req.values[i].size();
      if (total->has_value()) {
        Complete(req.keys[i], req.round, req.dtype, std::move(**total), slice);
      }
    }
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
  parked->reply_as = reply_as;
  parked->reply_sparse = reply_sparse;
  if (top() && wan_.mixed && req.round > 0) {
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
  for (size_t i = 0; i < req.keys.size(); ++i) {
    Key key = req.keys[i];
    if (auto d = table.DTypeOf(key)) parked->dtype = *d;
    bool first_waiter = !table.HasParked(key, req.round);
    AggregationTable::Token token = next_token_++;
    if (auto v = table.PullOrPark(key, req.round, token)) {
      parked->values[i] = std::move(*v);
      --parked->outstanding;
      continue;
    }
    tokens_[token] = {parked, i};
    // Round 0 never closes here: a party server fetches the initial value
    // from the global tier, once per key however many workers ask.
    if (!top() && req.round == 0 && first_waiter) Fetch(key, 0, req.dtype);
  }
  parked->req = std::move(req);
  if (parked->outstanding == 0) Reply(*parked);
}

uint64_t Aggregator::ContributorOf(const KVRequest& req) {
  // Who pushed: the same node id can exist in both tiers of a global server.
  return (static_cast<uint64_t>(req.via->tier().name() == "global" ? 2 : 1) << 32) |
         static_cast<uint32_t>(req.sender);
}

Buffer Aggregator::MixedDown(uint64_t who, Key key, const Buffer& now, bool sparse) {
  Buffer& last = mixed_sent_[{who, key}];
  if (!sparse || last.size() != now.size()) {
    // The whole value (the round-0 fetch, or a first answer): the party
    // holds exactly `now` afterwards.
    last = now;
    return sparse ? EncodeDense(now, ContainerDType(), false) : now;
  }
  Buffer change = Buffer::CopyOf(now.data(), now.size());
  Subtract(DType::kFloat32, change, last);
  last = now;
  auto ef = mixed_down_ef_.try_emplace(who, wan_.topk, ContainerDType()).first;
  return ef->second.Compress(key, change, /*accumulate=*/true);
}

void Aggregator::Reply(Parked& p) {
  if (top() && wan_.mixed && wan_.topk > 0 && p.req.via->tier().name() == "global" &&
      p.dtype == DType::kFloat32 && p.reply_as == DType::kNone) {
    // MixedSync: what this party holds is its own (see mixed_sent_).
    const uint64_t who = ContributorOf(p.req);
    std::vector<Buffer> out;
    for (size_t i = 0; i < p.values.size(); ++i) {
      const bool compress = p.reply_sparse && Compressible(p.dtype, p.values[i].size());
      if (compress || !p.reply_sparse) {
        out.push_back(MixedDown(who, p.req.keys[i], p.values[i], compress));
      } else {
        out.push_back(EncodeDense(p.values[i], ContainerDType(), false));
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
        out.push_back(EncodeDense(p.values[i], ContainerDType(), false));
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

std::string Aggregator::MixedSlicing(const KVRequest& req, Key key) const {
  // Compressed values travel whole: the owner has the whole initial value.
  if (req.flags & msgflag::kSparse) return "";
  if (!top() || (req.round == 0 && !(req.flags & msgflag::kSlice))) return "";
  // Round 0's whole value lives at the owner next to its slice; after
  // that a key is either sliced everywhere or nowhere.
  const bool slice = req.flags & msgflag::kSlice;
  auto other = slice ? table_.Latest(key) : slices_.Latest(key);
  if (slice ? !(other && other->round > 0) : !slices_.DTypeOf(key)) return "";
  return absl::StrFormat(
      "key %d arrived %s but this server holds it %s: every process must see the same "
      "MXNET_KVSTORE_BIGARRAY_BOUND (and a pull after round 0 needs the key's size: push it, "
      "or give a destination)",
      key, slice ? "as a slice" : "whole", slice ? "whole" : "as slices");
}

bool Aggregator::IsResentAfterClose(const AggregationTable& table, Key key, const KVRequest& req,
                                    const absl::StatusOr<std::optional<Buffer>>& added) const {
  if (!absl::IsFailedPrecondition(added.status())) return false;
  // Rounds advance only when every contributor's push arrived, so a push
  // for the latest published round is this round's, seen again.
  auto latest = table.Latest(key);
  return latest && latest->round == req.round;
}

void Aggregator::Complete(Key key, uint64_t round, DType dtype, Buffer total, bool slice) {
  if (!top() && policy_ != Policy::kKnown) {
    // The first sum: the master worker may have chosen the WAN policy.
    pending_completes_.push_back({key, round, dtype, std::move(total), slice});
    if (policy_ == Policy::kUnknown) AskPolicy();
    return;
  }
  ++stats_.rounds_completed;
  if (!top()) {
    if (wan_.hfa_k2 > 0 && round % static_cast<uint64_t>(wan_.hfa_k2) != 0) {
      // HFA: a party-level aggregation; the workers' average stays here.
      if (auto s = Divide(dtype, table_.expected(), total); !s.ok()) {
        FailKey(key, std::string(s.message()));
        return;
      }
      Publish(key, round, dtype, std::move(total), slice);
      return;
    }
    // Exactly one contribution per party per key and round leaves here.
    const uint64_t global_round = wan_.hfa_k2 > 0 ? round / wan_.hfa_k2 : round;
    Enqueue({key, global_round, dtype, std::move(total), /*fetch=*/false, round});
    return;
  }
  if (rule_.rule == UpdateRule::kAverage) {
    if (auto s = Divide(dtype, rule_.average_over, total); !s.ok()) {
      FailKey(key, std::string(s.message()));
      return;
    }
  }
  if (rule_.rule == UpdateRule::kSgd) {
    auto weights = TableOf(slice).Latest(key);
    if (!weights || weights->value.size() != total.size()) {
      FailKey(key, absl::StrFormat("key %d: the sgd rule needs initial values of the same size "
                                   "(the master worker pushes them)",
                                   key));
      return;
    }
    // `total` is this table's own fresh buffer, so the update is written
    // into it: the previous weights may still be on their way to workers.
    if (auto s = ApplySgd(dtype, rule_.learning_rate, weights->value, total); !s.ok()) {
      FailKey(key, std::string(s.message()));
      return;
    }
  }
  if (!slice && Compressible(dtype, total.size())) CompressDown(key, dtype, total);
  Publish(key, round, dtype, std::move(total), slice);
}

void Aggregator::CompressDown(Key key, DType dtype, const Buffer& result) {
  // A rule with state (sgd weights, averaged models) sends the change since
  // the last result, which parties add to what they hold; the sum rule
  // sends the result itself. Either way what top-k leaves out this round
  // goes down in a later one (error feedback).
  const bool accumulate = rule_.rule != UpdateRule::kSum;
  Buffer change = result;
  if (accumulate) {
    auto before = table_.Latest(key);
    if (!before || before->value.size() != result.size()) return;  // sent whole
    change = Buffer::CopyOf(result.data(), result.size());
    Subtract(dtype, change, before->value);
  }
  down_[key] = {result, down_ef_.Compress(key, change, accumulate)};
}

bool Aggregator::DecodeRequest(KVRequest& req, AggregationTable& table) {
  KVServer* via = req.via;
  if (!top() || req.dtype != DType::kFloat32) {
    via->RespondError(req, top() ? "compressed values must be float32"
                                 : "compressed values are for the WAN tier; a party's server "
                                   "takes its workers' float32");
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

void Aggregator::ApplyMixed(KVRequest& req, AggregationTable& table, uint64_t contributor) {
  KVServer* via = req.via;
  if (rule_.rule != UpdateRule::kSgd) {
    via->RespondError(req, "GEOPS_WAN_SYNC=mixed needs the sgd rule (the master worker sets it)");
    req.keys.clear();
    return;
  }
  for (size_t i = 0; i < req.keys.size(); ++i) {
    const Key key = req.keys[i];
    uint64_t& applied = mixed_applied_[{key, contributor}];
    if (req.round <= applied) {  // a resent push: applied once already
      ++stats_.duplicates;
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
    if (auto s = ApplySgd(req.dtype, rule_.learning_rate, weights->value, next); !s.ok()) {
      via->RespondError(req, std::string(s.message()));
      req.keys.clear();
      return;
    }
    applied = req.round;
    stats_.bytes_aggregated += req.values[i].size();
    ++stats_.rounds_completed;
    // Versions count applications, so every one is a new published value.
    const uint64_t version = weights->round + 1;
    const bool slice = req.flags & msgflag::kSlice;
    Publish(key, version, req.dtype, std::move(next), slice);
  }
  uint64_t& latest = contributor_round_[contributor];
  latest = std::max(latest, req.round);
  ReleaseStale();
}

bool Aggregator::WithinStaleness(uint64_t round) const {
  // Contributors not heard from yet are at round 0.
  uint64_t slowest = 0;
  if (static_cast<int>(contributor_round_.size()) >= expected_) {
    slowest = UINT64_MAX;
    for (const auto& [who, r] : contributor_round_) slowest = std::min(slowest, r);
  }
  return round <= slowest + static_cast<uint64_t>(wan_.staleness);
}

void Aggregator::ReleaseStale() {
  for (auto it = stale_.begin(); it != stale_.end();) {
    Parked& p = **it;
    if (!WithinStaleness(p.req.round)) {
      ++it;
      continue;
    }
    AggregationTable& table = TableOf(p.req.flags & msgflag::kSlice);
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

void Aggregator::Enqueue(Outgoing o) {
  if (outbox_.empty()) outbox_since_ = absl::Now();
  outbox_bytes_ += o.total.size();
  outbox_.push_back(std::move(o));
  if (outbox_bytes_ >= wan_.coalesce_bytes || absl::Now() - outbox_since_ >= wan_.coalesce_delay) {
    FlushLocked();
  }
}

void Aggregator::Flush() {
  std::unique_lock<std::mutex> lock(mu_);
  FlushLocked();
  RunDeferred(lock);
}

void Aggregator::FlushLocked() {
  if (outbox_.empty()) return;
  std::vector<Outgoing> out = std::move(outbox_);
  outbox_.clear();
  outbox_bytes_ = 0;
  if (!wan_.priority) {
    ForEachRequest(std::move(out), [this](Batch batch) {
      Send(batch, batch->front().fetch ? msgflag::kPull : msgflag::kPush | msgflag::kPull);
    });
    return;
  }
  for (Outgoing& o : out) {
    const std::pair<uint64_t, Key> at = {o.round, o.key};
    queue_.emplace(at, std::move(o));
  }
  Pump();
}

void Aggregator::Pump() {
  // Highest priority first (older rounds, then lower keys: the layers the
  // next forward pass needs first), and only while the bytes on their way
  // leave room: what waits here can still be overtaken.
  while (!queue_.empty() && in_flight_ < wan_.window_bytes) {
    ForEachRequest(TakeBatch(queue_, in_flight_), [this](Batch batch) {
      if (batch->front().fetch) {
        Send(batch, msgflag::kPull);
        return;
      }
      size_t batch_bytes = 0;
      for (const Outgoing& o : *batch) batch_bytes += o.total.size();
      // The push is acknowledged once it is at the global server, whatever
      // the other parties do: that frees the window. Its result is pulled
      // by priority too (PumpPulls).
      Send(batch, msgflag::kPush, [this, batch_bytes] {
        in_flight_ -= batch_bytes;
        Pump();
      });
      for (Outgoing& o : *batch) {
        const std::pair<uint64_t, Key> at = {o.round, o.key};
        pulls_.emplace(at, std::move(o));  // the sum's size is the result's
      }
    });
  }
  PumpPulls();
}

std::vector<Aggregator::Outgoing> Aggregator::TakeBatch(Queue& queue, size_t& in_flight) {
  std::vector<Outgoing> take;
  size_t bytes = 0;
  while (!queue.empty() && (take.empty() || bytes < wan_.coalesce_bytes)) {
    bytes += queue.begin()->second.total.size();
    take.push_back(std::move(queue.begin()->second));
    queue.erase(queue.begin());
  }
  in_flight += bytes;
  return take;
}

void Aggregator::PumpPulls() {
  // Results come back in the order they are asked for, with at most a
  // window of them on their way: a late first layer overtakes the results
  // not yet asked for, however big.
  while (!pulls_.empty() && pulls_in_flight_ < wan_.window_bytes) {
    ForEachRequest(TakeBatch(pulls_, pulls_in_flight_), [this](Batch batch) {
      size_t batch_bytes = 0;
      for (Outgoing& o : *batch) {
        batch_bytes += o.total.size();
        o.total = Buffer();  // sent; only its size mattered here
      }
      Send(batch, msgflag::kPull, [this, batch_bytes] {
        pulls_in_flight_ -= batch_bytes;
        PumpPulls();
      });
    });
  }
}

void Aggregator::ForEachRequest(std::vector<Outgoing> out,
                                const std::function<void(Batch)>& each) {
  // One request per kind (sums, or fetches of initial values) and dtype,
  // keys strictly increasing (a key twice, for two rounds, starts another
  // request); the client makes one message of a request's keys per global
  // server.
  auto kind = [](const Outgoing& o) { return std::make_pair(o.fetch, o.dtype); };
  std::stable_sort(out.begin(), out.end(), [&](const Outgoing& a, const Outgoing& b) {
    return kind(a) != kind(b) ? kind(a) < kind(b) : a.key < b.key;
  });
  size_t begin = 0;
  for (size_t i = 1; i <= out.size(); ++i) {
    if (i < out.size() && kind(out[i]) == kind(out[i - 1]) && out[i].key != out[i - 1].key) {
      continue;
    }
    each(std::make_shared<std::vector<Outgoing>>(std::make_move_iterator(out.begin() + begin),
                                                 std::make_move_iterator(out.begin() + i)));
    begin = i;
  }
}

void Aggregator::Send(Batch batch, uint32_t flags, std::function<void()> then) {
  // Encoded here, under the lock: the residuals are per key and shared.
  const DType dtype = batch->front().dtype;
  // Top-k: float32 sums (and their results) travel as containers.
  const bool sparse = wan_.topk > 0 && dtype == DType::kFloat32 && !batch->front().fetch;
  if (sparse) flags |= msgflag::kSparse;
  // float32 crosses in wan_.wire_dtype when that is a 16-bit type.
  const DType wire = !sparse && dtype == DType::kFloat32 && IsHalf(wan_.wire_dtype)
                         ? wan_.wire_dtype
                         : dtype;
  auto keys = std::make_shared<std::vector<Key>>();
  auto rounds = std::make_shared<std::vector<uint64_t>>();
  auto values = std::make_shared<std::vector<Buffer>>();
  for (const Outgoing& o : *batch) {
    keys->push_back(o.key);
    rounds->push_back(o.round);
    if (!(flags & msgflag::kPush)) continue;
    if (sparse) {
      values->push_back(Compressible(dtype, o.total.size())
                            ? up_ef_.Compress(o.key, o.total, false)
                            : EncodeDense(o.total, ContainerDType(), false));
    } else {
      values->push_back(wire == dtype ? o.total : Narrow(wire, o.total));
    }
  }
  deferred_.push_back([this, batch, flags, then, wire, sparse, keys, rounds, values] {
    upstream_->Submit(
        {*keys, std::move(*values), *rounds, wire, flags, {}, true},
        [this, batch, flags, then, wire, sparse](const absl::Status& s,
                                                  std::vector<Buffer>& results) {
          std::unique_lock<std::mutex> lock(mu_);
          const bool pull = flags & msgflag::kPull;
          for (size_t j = 0; j < batch->size(); ++j) {
            const Outgoing& o = (*batch)[j];
            if (!s.ok() || (pull && (results.size() != batch->size() ||
                                     (!o.fetch && results[j].empty())))) {
              FailKey(o.key, absl::StrFormat("global tier: %s", s.ToString()));
            } else if (pull && sparse) {
              auto v = DecodeResult(o.key, results[j]);
              if (v.ok()) Publish(o.key, o.local_round, o.dtype, std::move(*v));
              else FailKey(o.key, absl::StrFormat("global tier: %s", v.status().message()));
            } else if (pull) {
              Publish(o.key, o.local_round, o.dtype,
                      wire == o.dtype ? std::move(results[j]) : Widen(wire, results[j]));
            }
          }
          if (then) then();
          RunDeferred(lock);
        });
  });
}

absl::StatusOr<Buffer> Aggregator::DecodeResult(Key key, const Buffer& wire) {
  auto info = InspectSparse(wire);
  if (!info.ok()) return info.status();
  // The key's size is that of its initial value (fetched in round 0).
  auto last = table_.Latest(key);
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

void Aggregator::Fetch(Key key, uint64_t round, DType dtype) {
  Enqueue({key, round, dtype, Buffer(), /*fetch=*/true, round});
}

void Aggregator::Publish(Key key, uint64_t round, DType dtype, Buffer result, bool slice) {
  for (AggregationTable::Token t : TableOf(slice).Publish(key, round, dtype, result)) {
    auto it = tokens_.find(t);
    if (it == tokens_.end()) continue;
    auto [parked, index] = it->second;
    tokens_.erase(it);
    if (parked->outstanding == 0) continue;  // already failed
    parked->values[index] = result;
    if (--parked->outstanding == 0) Reply(*parked);
  }
}

void Aggregator::FailKey(Key key, const std::string& why) {
  log::Error("key %d: %s", key, why);
  for (auto it = tokens_.begin(); it != tokens_.end();) {
    auto& [parked, index] = it->second;
    if (parked->req.keys[index] != key) {
      ++it;
      continue;
    }
    if (parked->outstanding != 0) {
      parked->outstanding = 0;  // answered once, with the error
      parked->req.via->RespondError(parked->req, why);
    }
    it = tokens_.erase(it);
  }
}

}  // namespace geops
