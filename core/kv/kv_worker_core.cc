#include "core/kv/kv_worker_core.h"

#include <utility>

#include "absl/strings/str_format.h"

namespace geops {
namespace {

// `all` cut into `lens[i]` elements of `item` bytes each: exactly, or an
// error naming `what`.
absl::StatusOr<std::vector<Buffer>> Cut(const Buffer& all, size_t item,
                                        const std::vector<int64_t>& lens, const char* what) {
  const size_t elems = all.size() / item;
  std::vector<Buffer> out;
  out.reserve(lens.size());
  size_t off = 0;
  for (int64_t n : lens) {
    if (n < 0 || off + static_cast<size_t>(n) > elems) break;
    out.push_back(all.Slice(off * item, n * item));
    off += n;
  }
  if (out.size() != lens.size() || off != elems) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: lens do not cover its %d values exactly", what, elems));
  }
  return out;
}

// `lens` as given, or `all` split evenly over `nkeys`.
absl::StatusOr<std::vector<int64_t>> Lens(const std::vector<int64_t>& lens, const Buffer& all,
                                          size_t item, size_t nkeys, const char* what) {
  if (!lens.empty()) {
    if (lens.size() != nkeys) {
      return absl::InvalidArgumentError(
          absl::StrFormat("lens has %d entries for %d keys", lens.size(), nkeys));
    }
    return lens;
  }
  const size_t elems = all.size() / item;
  if (elems % nkeys != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: %d values do not split evenly over %d keys; pass lens", what, elems, nkeys));
  }
  return std::vector<int64_t>(nkeys, static_cast<int64_t>(elems / nkeys));
}

}  // namespace

absl::StatusOr<KVWorkerCore::Prepared> KVWorkerCore::Prepare(Call call) {
  const std::vector<Key>& keys = call.keys;
  if (keys.empty()) return absl::InvalidArgumentError("a request needs at least one key");
  for (size_t i = 1; i < keys.size(); ++i) {
    if (keys[i] <= keys[i - 1]) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "keys must be strictly increasing (key %d follows %d)", keys[i], keys[i - 1]));
    }
  }
  const size_t item = DTypeSize(call.dtype);
  const bool push = (call.flags & msgflag::kPush) != 0;
  for (const Buffer* b : {&call.values, call.dest ? &*call.dest : nullptr}) {
    if (b && b->size() % item != 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: %d bytes are not whole %s values", b == &call.values ? "values" : "destination",
          b->size(), DTypeName(call.dtype)));
    }
  }
  Prepared p;
  p.dtype = call.dtype;
  p.flags = call.flags;
  // One cut serves both sides: each key's result lands where a value of the
  // size pushed for it fits.
  std::vector<int64_t> lens;
  if (push || call.dest) {
    auto l = Lens(call.lens, push ? call.values : *call.dest, item, keys.size(),
                  push ? "values" : "destination");
    if (!l.ok()) return l.status();
    lens = std::move(*l);
  }
  if (push) {
    auto v = Cut(call.values, item, lens, "values");
    if (!v.ok()) return v.status();
    p.values = std::move(*v);
  }
  if (call.dest) {
    if (!call.dests.empty()) {
      return absl::InvalidArgumentError("give a request's destinations per key or in one buffer");
    }
    auto d = Cut(*call.dest, item, lens, "destination");
    if (!d.ok()) return d.status();
    p.dests = std::move(*d);
  } else {
    p.dests = std::move(call.dests);
  }
  if (!p.dests.empty() && p.dests.size() != keys.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%d destinations for %d keys: give one per key", p.dests.size(), keys.size()));
  }
  p.keys = std::move(call.keys);
  return p;
}

int KVWorkerCore::Submit(Prepared p, KVClient::Completion done) {
  // An init sets round 0; only a training push opens the next round.
  const bool advance = (p.flags & msgflag::kPush) && !(p.flags & msgflag::kInit);
  std::vector<uint64_t> rounds(p.keys.size());
  {
    MutexLock lock(&mu_);
    for (size_t i = 0; i < p.keys.size(); ++i) {
      uint64_t& r = rounds_[p.keys[i]];
      if (advance) ++r;
      rounds[i] = r;
    }
  }
  KVClient::Request req{p.keys, std::move(p.values), rounds, p.dtype, p.flags,
                        std::move(p.dests), /*detached=*/false};
  // KVClient copies what it keeps of the keys and rounds before it returns.
  return client_.Submit(std::move(req), std::move(done));
}

int KVWorkerCore::Send(Call call, KVClient::Completion done) {
  auto p = Prepare(std::move(call));
  if (!p.ok()) return client_.Reject(p.status(), std::move(done));
  return Submit(std::move(*p), std::move(done));
}

KVClient::Completion KVWorkerCore::Notify(std::function<void()> cb) {
  if (!cb) return nullptr;
  return [cb = std::move(cb)](const absl::Status&, std::vector<Buffer>&) { cb(); };
}

KVClient::Completion KVWorkerCore::Views(std::vector<Buffer>* outs, std::function<void()> cb) {
  return [outs, cb = std::move(cb)](const absl::Status& s, std::vector<Buffer>& values) {
    if (s.ok() && outs) *outs = std::move(values);
    if (cb) cb();
  };
}

}  // namespace geops
