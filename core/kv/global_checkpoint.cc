// A top server's durable state: what goes into a checkpoint, and how a
// restarted server takes it back. Part of GlobalAggregator; the files and
// their cadence are core/kv/checkpointer.h's.
//
// A checkpoint holds every key's latest value (whole keys and this
// server's slices) and the rule with its WAN policy. A server that resumes
// publishes those values as round 0, the round every worker pulls when it
// (re)starts, so a restarted cluster continues from the checkpoint's model
// and its rounds count from 1 again. State that only makes sense to
// processes that kept running (error-feedback residuals, MixedSync's
// per-party rounds, what each party was last sent) is not kept: after a
// restart every party starts from the whole model it pulls.
#include <algorithm>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "core/base/log.h"
#include "core/kv/global_aggregator.h"

namespace geops {

absl::Status GlobalAggregator::EnableCheckpoints(const CheckpointOptions& options, uint32_t rank,
                                                 uint32_t servers) {
  auto snapshot = [this] {
    engine_.Lock();
    CheckpointImage image = SnapshotLocked();
    engine_.Unlock();
    return image;
  };
  auto c = std::make_unique<Checkpointer>(options, rank, servers, snapshot);
  auto image = c->LoadLatest();
  if (!image.ok()) return image.status();
  if (*image) {
    engine_.Lock();
    absl::Status s = RestoreLocked(**image);
    engine_.Unlock();
    if (!s.ok()) return s;
  }
  checkpointer_ = std::move(c);
  checkpointer_->Start();
  return absl::OkStatus();
}

absl::Status GlobalAggregator::CheckpointNow() {
  if (!checkpointer_) return absl::OkStatus();
  return checkpointer_->Final();
}

CheckpointImage GlobalAggregator::SnapshotLocked() {
  CheckpointImage image;
  uint64_t slowest = UINT64_MAX;
  for (bool slice : {false, true}) {
    engine_.table(slice).ForEachLatest(
        [&](Key key, DType dtype, const AggregationTable::Published& p) {
          image.entries.push_back({key, slice, dtype, p.round, p.value});
          slowest = std::min(slowest, p.round);
        });
  }
  std::sort(image.entries.begin(), image.entries.end(),
            [](const CheckpointEntry& a, const CheckpointEntry& b) {
              return std::make_pair(a.slice, a.key) < std::make_pair(b.slice, b.key);
            });
  image.round = image.entries.empty() ? 0 : slowest;
  MutexLock lock(&mu_);
  if (rule_set_) image.rule = EncodeRule(rule_);
  return image;
}

absl::Status GlobalAggregator::RestoreLocked(const CheckpointImage& image) {
  if (!image.rule.empty()) {
    auto r = DecodeRule(image.rule);
    if (!r.ok()) {
      return absl::DataLossError(absl::StrFormat("checkpoint %d: its update rule cannot be read: %s",
                                                 image.sequence, r.status().message()));
    }
    MutexLock lock(&mu_);
    rule_ = *r;
    rule_set_ = true;
    if (r->policy_set && global_tier_) AdoptPolicy(*r);
  }
  std::set<Key> sliced;
  for (const CheckpointEntry& e : image.entries) {
    if (e.slice) sliced.insert(e.key);
  }
  for (const CheckpointEntry& e : image.entries) {
    restored_.insert({e.key, e.slice});
    // The owner of a big key also holds its whole initial value, for
    // round-0 pulls that do not know the key's size. That value is the
    // initial one, not the model's: the model is in the slices, one per
    // server. Such a pull is refused (HandleLocked) rather than answered
    // with weights from before the checkpoint.
    if (!e.slice && sliced.count(e.key)) {
      sliced_restored_.insert(e.key);
      continue;
    }
    engine_.Publish(e.key, 0, e.dtype, e.value, e.slice);
  }
  return absl::OkStatus();
}

void GlobalAggregator::MaybeCheckpoint(Key key, bool slice, uint64_t round) {
  if (!checkpointer_ || !checkpointer_->RoundClosed(key, slice, round)) return;
  const absl::Time t0 = absl::Now();
  CheckpointImage image = SnapshotLocked();
  checkpointer_->Submit(std::move(image), absl::Now() - t0);
}

std::string GlobalAggregator::WholeOfSlicedRestored(const KVRequest& req) {
  if (sliced_restored_.empty() || req.round != 0 || (req.flags & msgflag::kSlice)) return "";
  for (Key key : req.keys) {
    if (sliced_restored_.count(key)) {
      return absl::StrFormat(
          "key %d is held as slices over the global servers since they resumed from a "
          "checkpoint: pull it with its size (a destination, or after pushing it) so that its "
          "slices are read (MXNET_KVSTORE_BIGARRAY_BOUND)",
          key);
    }
  }
  return "";
}

bool GlobalAggregator::KeepRestored(const KVRequest& req, size_t i, bool slice) {
  const Key key = req.keys[i];
  if (!slice && sliced_restored_.count(key)) return true;  // the slices hold it
  auto held = engine_.table(slice).Latest(key);
  auto dtype = engine_.table(slice).DTypeOf(key);
  if (!held || !dtype || held->value.size() != req.values[i].size() || *dtype != req.dtype) {
    req.via->RespondError(
        req, absl::StrFormat(
                 "key %d: the checkpoint this server resumed from holds %d bytes of %s for it, "
                 "but the master worker initialises it with %d bytes of %s: a checkpoint of "
                 "another model (GEOPS_CHECKPOINT_DIR)",
                 key, held ? held->value.size() : 0, dtype ? DTypeName(*dtype) : "nothing",
                 req.values[i].size(), DTypeName(req.dtype)));
    return false;
  }
  if (!said_restored_) {
    said_restored_ = true;
    log::Info("initial values of keys restored from the checkpoint are ignored: the cluster "
              "continues from the checkpoint's model");
  }
  return true;
}

}  // namespace geops
