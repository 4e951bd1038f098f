#include "core/kv/sum_engine.h"

#include "core/base/log.h"

namespace geops {

void SumEngine::Start(int expected) {
  Lock();
  table_.set_expected(expected);
  slices_.set_expected(expected);
  expected_ = expected;
  started_ = true;
  std::vector<KVRequest> held = std::move(held_);
  held_.clear();
  for (auto& r : held) hooks_.handle(std::move(r));
  Unlock();
}

void SumEngine::Handle(KVRequest&& req) {
  Lock();
  if (!started_) {
    held_.push_back(std::move(req));
  } else {
    hooks_.handle(std::move(req));
  }
  Unlock();
}

void SumEngine::Unlock() {
  // Work deferred while the deferred work runs is run by whoever took the
  // lock to defer it, so one pass empties the list.
  std::vector<std::function<void()>> work = std::move(deferred_);
  deferred_.clear();
  mu_.Unlock();
  for (auto& w : work) w();
}

AggregatorStats SumEngine::Stats() const {
  MutexLock lock(&mu_);
  return stats_;
}

bool SumEngine::Sum(const KVRequest& req, uint64_t contributor,
                    const std::function<void(Key, Buffer)>& complete) {
  AggregationTable& t = table(req.flags & msgflag::kSlice);
  for (size_t i = 0; i < req.keys.size(); ++i) {
    auto total = t.Add(req.keys[i], req.round, req.dtype, req.values[i], contributor);
    if (absl::IsAlreadyExists(total.status()) ||
        IsResentAfterClose(t, req.keys[i], req, total)) {
      // A resent request (its first copy was counted, or the round it
      // belongs to has closed since): nothing to add, and its pull half is
      // answered as usual.
      ++stats_.duplicates;
      continue;
    }
    if (!total.ok()) {
      req.via->RespondError(req, std::string(total.status().message()));
      return false;
    }
    stats_.bytes_aggregated += req.values[i].size();
    if (total->has_value()) complete(req.keys[i], std::move(**total));
  }
  return true;
}

bool SumEngine::IsResentAfterClose(const AggregationTable& table, Key key, const KVRequest& req,
                                   const absl::StatusOr<std::optional<Buffer>>& added) const {
  if (!absl::IsFailedPrecondition(added.status())) return false;
  // Rounds advance only when every contributor's push arrived, so a push
  // for the latest published round is this round's, seen again.
  auto latest = table.Latest(key);
  return latest && latest->round == req.round;
}

std::vector<Key> SumEngine::PullOrPark(std::shared_ptr<Parked> parked, KVRequest&& req) {
  AggregationTable& t = table(req.flags & msgflag::kSlice);
  std::vector<Key> first;
  for (size_t i = 0; i < req.keys.size(); ++i) {
    Key key = req.keys[i];
    if (auto d = t.DTypeOf(key)) parked->dtype = *d;
    bool first_waiter = !t.HasParked(key, req.round);
    AggregationTable::Token token = next_token_++;
    if (auto v = t.PullOrPark(key, req.round, token)) {
      parked->values[i] = std::move(*v);
      --parked->outstanding;
      continue;
    }
    tokens_[token] = {parked, i};
    if (first_waiter) first.push_back(key);
  }
  parked->req = std::move(req);
  if (parked->outstanding == 0) hooks_.reply(*parked);
  return first;
}

void SumEngine::Publish(Key key, uint64_t round, DType dtype, Buffer result, bool slice) {
  for (AggregationTable::Token t : table(slice).Publish(key, round, dtype, result)) {
    auto it = tokens_.find(t);
    if (it == tokens_.end()) continue;
    auto [parked, index] = it->second;
    tokens_.erase(it);
    if (parked->outstanding == 0) continue;  // already failed
    parked->values[index] = result;
    if (--parked->outstanding == 0) hooks_.reply(*parked);
  }
}

void SumEngine::FailKey(Key key, const std::string& why) {
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

uint64_t SumEngine::ContributorOf(const KVRequest& req) {
  return (static_cast<uint64_t>(req.via->tier().global() ? 2 : 1) << 32) |
         static_cast<uint32_t>(req.sender);
}

}  // namespace geops
