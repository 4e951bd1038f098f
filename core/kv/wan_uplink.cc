#include "core/kv/wan_uplink.h"

#include <algorithm>

#include "core/kv/half.h"

namespace geops {

WanUplink::WanUplink(KVClient& upstream, WanOptions options, const WanPolicy& policy,
                     ResultHandler on_result)
    : upstream_(upstream),
      options_(options),
      on_result_(std::move(on_result)),
      policy_(policy),
      up_ef_(policy.wan_topk, policy.wan_container_dtype()) {
  timer_ = std::thread([this] { TimerLoop(); });
}

WanUplink::~WanUplink() { Stop(); }

void WanUplink::Stop() {
  {
    MutexLock lock(&mu_);
    stopped_ = true;
    ready_.clear();
  }
  wake_.SignalAll();
  if (timer_.joinable()) timer_.join();
}

void WanUplink::SetPolicy(const WanPolicy& policy) {
  MutexLock lock(&mu_);
  policy_ = policy;
  up_ef_ = ErrorFeedback(policy.wan_topk, policy.wan_container_dtype());
}

void WanUplink::TimerLoop() {
  // The deadline of a batch that nothing else sends: its oldest sum has
  // waited coalesce_delay.
  mu_.Lock();
  while (!stopped_) {
    if (outbox_.empty()) {
      wake_.Wait(&mu_);
      continue;
    }
    const absl::Time due = outbox_since_ + options_.coalesce_delay;
    if (absl::Now() < due) {
      wake_.WaitWithDeadline(&mu_, due);
      continue;
    }
    FlushLocked();
    mu_.Unlock();
    SendReady();
    mu_.Lock();
  }
  mu_.Unlock();
}

void WanUplink::Enqueue(Outgoing o) {
  MutexLock lock(&mu_);
  if (stopped_) return;
  if (outbox_.empty()) {
    outbox_since_ = absl::Now();
    wake_.Signal();
  }
  outbox_bytes_ += o.total.size();
  outbox_.push_back(std::move(o));
  if (outbox_bytes_ >= options_.coalesce_bytes ||
      absl::Now() - outbox_since_ >= options_.coalesce_delay) {
    FlushLocked();
  }
}

void WanUplink::Flush() {
  {
    MutexLock lock(&mu_);
    FlushLocked();
  }
  SendReady();
}

void WanUplink::SendReady() {
  std::vector<Submission> ready;
  {
    MutexLock lock(&mu_);
    if (stopped_) return;
    ready = std::move(ready_);
    ready_.clear();
  }
  for (Submission& s : ready) Submit(std::move(s));
}

void WanUplink::FlushLocked() {
  if (outbox_.empty()) return;
  std::vector<Outgoing> out = std::move(outbox_);
  outbox_.clear();
  outbox_bytes_ = 0;
  if (!options_.priority) {
    ForEachRequest(std::move(out), [this](Batch batch) ABSL_NO_THREAD_SAFETY_ANALYSIS {
      Prepare(batch, batch->front().fetch ? msgflag::kPull : msgflag::kPush | msgflag::kPull);
    });
    return;
  }
  for (Outgoing& o : out) {
    const std::pair<uint64_t, Key> at = {o.round, o.key};
    queue_.emplace(at, std::move(o));
  }
  Pump();
}

void WanUplink::Pump() {
  // Highest priority first (older rounds, then lower keys: the layers the
  // next forward pass needs first), and only while the bytes on their way
  // leave room: what waits here can still be overtaken.
  while (!queue_.empty() && in_flight_ < options_.window_bytes) {
    ForEachRequest(TakeBatch(queue_, in_flight_), [this](Batch batch) ABSL_NO_THREAD_SAFETY_ANALYSIS {
      if (batch->front().fetch) {
        Prepare(batch, msgflag::kPull);
        return;
      }
      size_t batch_bytes = 0;
      for (const Outgoing& o : *batch) batch_bytes += o.total.size();
      // The push is acknowledged once it is at the global server, whatever
      // the other parties do: that frees the window. Its result is pulled
      // by priority too (PumpPulls).
      Prepare(batch, msgflag::kPush, [this, batch_bytes]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
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

std::vector<WanUplink::Outgoing> WanUplink::TakeBatch(Queue& queue, size_t& in_flight) {
  std::vector<Outgoing> take;
  size_t bytes = 0;
  while (!queue.empty() && (take.empty() || bytes < options_.coalesce_bytes)) {
    bytes += queue.begin()->second.total.size();
    take.push_back(std::move(queue.begin()->second));
    queue.erase(queue.begin());
  }
  in_flight += bytes;
  return take;
}

void WanUplink::PumpPulls() {
  // Results come back in the order they are asked for, with at most a
  // window of them on their way: a late first layer overtakes the results
  // not yet asked for, however big.
  while (!pulls_.empty() && pulls_in_flight_ < options_.window_bytes) {
    ForEachRequest(TakeBatch(pulls_, pulls_in_flight_), [this](Batch batch) ABSL_NO_THREAD_SAFETY_ANALYSIS {
      size_t batch_bytes = 0;
      for (Outgoing& o : *batch) {
        batch_bytes += o.total.size();
        o.total = Buffer();  // sent; only its size mattered here
      }
      Prepare(batch, msgflag::kPull, [this, batch_bytes]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
        pulls_in_flight_ -= batch_bytes;
        PumpPulls();
      });
    });
  }
}

void WanUplink::ForEachRequest(std::vector<Outgoing> out, const std::function<void(Batch)>& each) {
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

void WanUplink::Prepare(Batch batch, uint32_t flags, std::function<void()> then) {
  // Encoded here, under the lock: the residuals are per key and shared.
  const DType dtype = batch->front().dtype;
  // Top-k: float32 sums (and their results) travel as containers.
  const bool sparse = policy_.wan_topk > 0 && dtype == DType::kFloat32 && !batch->front().fetch;
  if (sparse) flags |= msgflag::kSparse;
  // float32 crosses in the policy's dtype when that is a 16-bit type.
  const DType wire =
      !sparse && dtype == DType::kFloat32 && IsHalf(policy_.wan_dtype) ? policy_.wan_dtype : dtype;
  Submission sub{batch, flags, sparse, wire, std::make_shared<std::vector<Key>>(),
                 std::make_shared<std::vector<uint64_t>>(), {}, std::move(then)};
  for (const Outgoing& o : *batch) {
    sub.keys->push_back(o.key);
    sub.rounds->push_back(o.round);
    if (!(flags & msgflag::kPush)) continue;
    if (sparse) {
      sub.values.push_back(policy_.wan_topk_applies(dtype, o.total.size())
                               ? up_ef_.Compress(o.key, o.total, false)
                               : EncodeDense(o.total, policy_.wan_container_dtype(), false));
    } else {
      sub.values.push_back(wire == dtype ? o.total : Narrow(wire, o.total));
    }
  }
  ready_.push_back(std::move(sub));
}

void WanUplink::Submit(Submission sub) {
  auto keys = sub.keys;
  auto rounds = sub.rounds;
  auto done = std::make_shared<Submission>(std::move(sub));
  upstream_.Submit(
      {*keys, std::move(done->values), *rounds, done->wire, done->flags, {}, true},
      [this, done, keys, rounds](const absl::Status& s, std::vector<Buffer>& results) {
        on_result_(done->batch, done->flags, done->sparse, done->wire, s, results);
        if (!done->then) return;
        {
          MutexLock lock(&mu_);
          done->then();
        }
        SendReady();
      });
}

}  // namespace geops
