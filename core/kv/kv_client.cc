#include "core/kv/kv_client.h"

#include <algorithm>
#include <cstring>
#include <thread>

#include "absl/strings/str_format.h"
#include "core/base/log.h"
#include "core/kv/partition.h"

namespace geops {

KVClient::KVClient(TierNode& tier) : tier_(tier) {
  tier_.set_data_handler([this](Message&& m) { OnMessage(std::move(m)); });
  tier_.add_abort_handler([this](const std::string& reason) {
    Fail(absl::AbortedError(reason));
  });
  if (auto after = tier_.resend_after()) {
    resender_ = std::thread([this, d = *after] { ResendLoop(d); });
    // The resender sends through the tier: it must end before the tier does.
    tier_.add_stop_handler([this] { StopResender(); });
  }
}

KVClient::~KVClient() { StopResender(); }

void KVClient::StopResender() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_resender_ = true;
  }
  cv_.notify_all();
  if (resender_.joinable()) resender_.join();
}

absl::Status KVClient::SendTracked(int ts, Message m) {
  if (tier_.resend_after()) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = pending_.find(ts);
    if (it != pending_.end()) {
      // Read before the send: a break during it counts as after.
      it->second.sent[{m.header.recipient, m.header.round,
                       (m.header.flags & msgflag::kSlice) != 0}] = {
          m, tier_.transport().Disconnects(m.header.recipient), false};
    }
  }
  return tier_.Send(std::move(m));
}

void KVClient::ResendLoop(absl::Duration after) {
  const auto tick = absl::ToChronoMilliseconds(std::max(after / 4, absl::Milliseconds(5)));
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_resender_) {
    cv_.wait_for(lock, tick);
    if (stop_resender_) break;
    std::vector<Message> again;
    std::map<int, uint64_t> broken;  // per peer, read once per pass
    for (auto& [ts, p] : pending_) {
      if (p.completing) continue;
      for (auto& [where, sent] : p.sent) {
        if (sent.answered) continue;
        const int peer = std::get<0>(where);
        auto [it, fresh] = broken.try_emplace(peer, 0);
        if (fresh) it->second = tier_.transport().Disconnects(peer);
        if (it->second == sent.disconnects) continue;
        sent.disconnects = it->second;
        again.push_back(sent.msg);  // shares the Buffers: no copy of values
      }
    }
    if (again.empty()) continue;
    lock.unlock();
    for (auto& m : again) {
      resent_.fetch_add(1, std::memory_order_relaxed);
      log::Verbose(1, "%s: the connection to node %d broke with request %d unanswered; "
                   "resending", tier_.label(), m.header.recipient, m.header.timestamp);
      (void)tier_.Send(std::move(m));
    }
    lock.lock();
  }
}

int KVClient::Begin(std::vector<Key> keys, Completion done, int messages) {
  std::lock_guard<std::mutex> lock(mu_);
  // Timestamps travel as int32: wrap, and never reuse one still pending.
  int ts;
  do {
    ts = next_ts_;
    next_ts_ = next_ts_ == INT32_MAX ? 1 : next_ts_ + 1;
  } while (pending_.count(ts) != 0);
  Pending& p = pending_[ts];
  p.outstanding = messages;
  p.status = failed_;
  p.values.resize(keys.size());
  p.keys = std::move(keys);
  p.done = std::move(done);
  return ts;
}

int KVClient::Reject(absl::Status status, Completion done) {
  int ts = Begin({}, std::move(done), 0);
  std::unique_lock<std::mutex> lock(mu_);
  Pending& p = pending_[ts];
  if (p.status.ok()) p.status = std::move(status);
  Finish(ts, lock);
  return ts;
}

int KVClient::Submit(Request req, Completion done) {
  const size_t n = req.keys.size();
  std::vector<Key> keys(req.keys.begin(), req.keys.end());
  auto fail_now = [&](absl::Status s) { return Reject(std::move(s), std::move(done)); };
  if (n == 0) return fail_now(absl::InvalidArgumentError("a request needs at least one key"));
  if (req.rounds.size() != n) return fail_now(absl::InvalidArgumentError("one round per key"));
  if (!req.destinations.empty() && req.destinations.size() != n) {
    return fail_now(absl::InvalidArgumentError(
        absl::StrFormat("%d keys but %d destinations", n, req.destinations.size())));
  }
  if (!req.values.empty() && req.values.size() != n) {
    return fail_now(absl::InvalidArgumentError(
        absl::StrFormat("%d keys but %d values", n, req.values.size())));
  }
  for (size_t i = 1; i < n; ++i) {
    if (req.keys[i] <= req.keys[i - 1]) {
      return fail_now(absl::InvalidArgumentError("keys must be strictly increasing"));
    }
  }
  std::vector<NodeInfo> servers = tier_.Members(Role::kServer);
  if (servers.empty()) return fail_now(absl::FailedPreconditionError("no servers in the tier"));

  // Which keys travel as slices, and their sizes: a key's size is that of
  // its value or destination, or what this client last saw of it.
  // Compressed values travel whole to the key's owner: a container is not
  // cut by bytes.
  const bool slicing = Slices(servers) && !(req.flags & msgflag::kSparse);
  const size_t elem = DTypeSize(req.dtype);
  std::vector<size_t> sliced(n, 0);
  if (slicing && elem > 0) {
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = 0; i < n; ++i) {
      size_t bytes = !req.values.empty()         ? req.values[i].size()
                     : !req.destinations.empty() ? req.destinations[i].size()
                                                 : 0;
      if (bytes == 0) {
        auto it = key_bytes_.find(req.keys[i]);
        bytes = it == key_bytes_.end() ? 0 : it->second;
      } else {
        key_bytes_[req.keys[i]] = bytes;
      }
      const size_t elems = bytes / elem;
      if (bytes % elem == 0 && elems >= static_cast<size_t>(tier_.slice_elems()) &&
          elems >= servers.size()) {
        sliced[i] = bytes;
      }
    }
  }

  // Group the keys into one message per (server, round, sliced or not);
  // keys are sorted, so a server's keys are a contiguous run.
  struct Group {
    int server;
    uint64_t round;
    bool slice;
    std::vector<size_t> idx;
  };
  std::vector<Group> groups;
  std::map<std::tuple<int, uint64_t, bool>, size_t> where;
  auto add = [&](int s, bool slice, size_t i) {
    auto [it, inserted] = where.try_emplace({s, req.rounds[i], slice}, groups.size());
    if (inserted) groups.push_back({s, req.rounds[i], slice, {}});
    groups[it->second].idx.push_back(i);
  };
  const int nservers = static_cast<int>(servers.size());
  for (size_t i = 0; i < n; ++i) {
    // An init also stores the whole value at the key's owner: a pull that
    // cannot know the size (round 0) reads it there.
    if (sliced[i] == 0 || (req.flags & msgflag::kInit)) add(OwnerOf(req.keys[i], nservers), false, i);
    for (int s = 0; sliced[i] != 0 && s < nservers; ++s) add(s, true, i);
  }

  int ts = Begin(std::move(keys), std::move(done), static_cast<int>(groups.size()));
  {
    std::unique_lock<std::mutex> lock(mu_);
    Pending& p = pending_[ts];
    p.destinations = req.destinations;
    p.dtype = req.dtype;
    p.detached = req.detached;
    if (slicing) {
      p.sliced = sliced;
      for (const auto& s : servers) p.servers.push_back(s.id);
    }
    if (!failed_.ok()) {
      pending_[ts].outstanding = 0;
      Finish(ts, lock);
      return ts;
    }
  }
  auto part = [&](const Buffer& b, size_t i, const Group& g) {
    if (!g.slice) return b;
    ByteRange r = SliceRange(sliced[i], elem, g.server, nservers);
    return b.Slice(r.offset, r.length);
  };
  for (const Group& g : groups) {
    Message m;
    m.header.command = Command::kData;
    m.header.recipient = servers[g.server].id;
    m.header.flags = req.flags | msgflag::kRequest | (g.slice ? msgflag::kSlice : 0);
    m.header.timestamp = ts;
    m.header.round = g.round;
    m.header.dtype = req.dtype;
    m.header.key_count = static_cast<uint32_t>(g.idx.size());
    Buffer keyseg = Buffer::Allocate(g.idx.size() * sizeof(Key));
    for (size_t j = 0; j < g.idx.size(); ++j) {
      std::memcpy(keyseg.data() + j * sizeof(Key), &req.keys[g.idx[j]], sizeof(Key));
    }
    m.segments.push_back(std::move(keyseg));
    if (!req.values.empty()) {
      for (size_t i : g.idx) m.segments.push_back(part(req.values[i], i, g));
    }
    if (!req.destinations.empty()) {
      std::vector<Buffer> dest(1);  // the keys land in transport memory
      for (size_t i : g.idx) dest.push_back(part(req.destinations[i], i, g));
      tier_.transport().ExpectInto(m.header.recipient, ts, std::move(dest));
    }
    if (auto s = SendTracked(ts, std::move(m)); !s.ok()) {
      std::unique_lock<std::mutex> lock(mu_);
      Pending& p = pending_[ts];
      if (p.status.ok()) p.status = s;
      if (--p.outstanding == 0) Finish(ts, lock);
    }
  }
  return ts;
}

bool KVClient::Slices(const std::vector<NodeInfo>& servers) const {
  if (tier_.slice_elems() <= 0 || servers.size() < 2) return false;
  if (tier_.global()) return true;
  for (const auto& s : servers) {
    if (s.global_server) return true;
  }
  return false;
}

bool KVClient::PlaceSlice(Pending& p, size_t at, int server, Buffer& got) {
  auto fail = [&](std::string why) {
    if (p.status.ok()) p.status = absl::DataLossError(std::move(why));
    return false;
  };
  auto rank = std::find(p.servers.begin(), p.servers.end(), server);
  if (at >= p.sliced.size() || p.sliced[at] == 0 || rank == p.servers.end()) {
    return fail(absl::StrFormat("server %d answered with a slice of key %d, which was not sliced",
                                server, p.keys[at]));
  }
  const size_t whole = p.sliced[at];
  ByteRange r = SliceRange(whole, DTypeSize(p.dtype), static_cast<int>(rank - p.servers.begin()),
                           static_cast<int>(p.servers.size()));
  if (got.size() != r.length) {
    return fail(absl::StrFormat("server %d answered %d bytes for its %d-byte slice of key %d",
                                server, got.size(), r.length, p.keys[at]));
  }
  Buffer& into = p.destinations.empty() ? p.values[at] : p.destinations[at];
  if (into.empty()) into = Buffer::Allocate(whole);
  std::byte* to = into.data() + r.offset;
  if (got.data() != to) {
    std::memcpy(to, got.data(), r.length);
    bytes_copied_.fetch_add(r.length, std::memory_order_relaxed);
  }
  if (!p.destinations.empty()) p.values[at] = p.destinations[at];
  return true;
}

int KVClient::SetRule(const RuleSpec& rule, Completion done) {
  return ToEveryServer(Command::kSetRule, EncodeRule(rule), std::move(done));
}

int KVClient::QueryStats(Completion done) {
  return ToEveryServer(Command::kStats, Buffer(), std::move(done));
}

int KVClient::QueryRule(Completion done) {
  return ToEveryServer(Command::kGetRule, Buffer(), std::move(done));
}

int KVClient::ToEveryServer(Command command, Buffer body, Completion done) {
  std::vector<NodeInfo> servers = tier_.Members(Role::kServer);
  // Server ids stand in for keys: answers are placed by their sender.
  std::vector<Key> ids;
  for (const auto& s : servers) ids.push_back(static_cast<Key>(s.id));
  std::sort(ids.begin(), ids.end());
  int ts = Begin(ids, std::move(done), static_cast<int>(servers.size()));
  {
    // As in Submit: a client that already failed (its tier aborted), or a
    // tier without servers, answers at once instead of never.
    std::unique_lock<std::mutex> lock(mu_);
    Pending& p = pending_[ts];
    p.command = command;
    if (!failed_.ok() || servers.empty()) {
      if (p.status.ok()) p.status = absl::FailedPreconditionError("no servers in the tier");
      p.outstanding = 0;
      Finish(ts, lock);
      return ts;
    }
  }
  for (const auto& s : servers) {
    Message m;
    m.header.command = command;
    m.header.recipient = s.id;
    m.header.flags = msgflag::kRequest;
    m.header.timestamp = ts;
    if (!body.empty()) m.segments.push_back(body);
    if (auto st = SendTracked(ts, std::move(m)); !st.ok()) {
      std::unique_lock<std::mutex> lock(mu_);
      Pending& p = pending_[ts];
      if (p.status.ok()) p.status = st;
      if (--p.outstanding == 0) Finish(ts, lock);
    }
  }
  return ts;
}

void KVClient::OnMessage(Message&& msg) {
  const Header& h = msg.header;
  if (h.flags & msgflag::kRequest) {
    log::Warn("%s: a worker got a request (%s); dropped", tier_.name(), msg.DebugString());
    return;
  }
  std::unique_lock<std::mutex> lock(mu_);
  auto it = pending_.find(h.timestamp);
  const bool resending = tier_.resend_after().has_value();
  if (it == pending_.end() || it->second.completing) {
    if (resending) {
      duplicates_.fetch_add(1, std::memory_order_relaxed);  // answered twice: resent
    } else {
      log::Warn("%s: response to unknown request %d from node %d; dropped", tier_.name(),
                h.timestamp, h.sender);
    }
    return;
  }
  Pending& p = it->second;
  if (resending) {
    auto sent = p.sent.find({h.sender, h.round, (h.flags & msgflag::kSlice) != 0});
    if (sent == p.sent.end() || sent->second.answered) {
      duplicates_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    sent->second.answered = true;
    sent->second.msg = Message();  // the values may go now
  }
  if (h.flags & msgflag::kError) {
    if (p.status.ok()) {
      p.status = absl::FailedPreconditionError(absl::StrFormat(
          "server %d: %s", h.sender, msg.segments.empty() ? "" : DecodeText(msg.segments[0])));
    }
  } else if (h.command != p.command) {
    if (p.status.ok()) {
      p.status = absl::DataLossError(absl::StrFormat(
          "server %d answered request %d with %s", h.sender, h.timestamp,
          CommandName(h.command)));
    }
  } else if (h.command == Command::kStats || h.command == Command::kGetRule) {
    auto pos = std::lower_bound(p.keys.begin(), p.keys.end(), static_cast<Key>(h.sender));
    if (pos != p.keys.end() && *pos == static_cast<Key>(h.sender) && msg.segments.size() == 1) {
      p.values[pos - p.keys.begin()] = std::move(msg.segments[0]);
    }
  } else if (h.command == Command::kData && msg.segments.size() > 1 && h.dtype != p.dtype) {
    // The values would be read as the wrong type (and sized wrongly).
    if (p.status.ok()) {
      p.status = absl::FailedPreconditionError(absl::StrFormat(
          "server %d answered with %s values; the request was for %s", h.sender,
          DTypeName(h.dtype), DTypeName(p.dtype)));
    }
  } else if (h.command == Command::kData && msg.segments.size() > 1) {
    auto keys = msg.segments[0];
    for (uint32_t j = 0; j < h.key_count; ++j) {
      Key k;
      std::memcpy(&k, keys.data() + j * sizeof(Key), sizeof(Key));
      auto pos = std::lower_bound(p.keys.begin(), p.keys.end(), k);
      if (pos == p.keys.end() || *pos != k) {
        if (p.status.ok()) {
          p.status = absl::DataLossError(absl::StrFormat(
              "server %d answered request %d with key %d it was not asked for", h.sender,
              h.timestamp, k));
        }
        continue;
      }
      size_t at = pos - p.keys.begin();
      Buffer& got = msg.segments[j + 1];
      if (h.flags & msgflag::kSlice) {
        PlaceSlice(p, at, h.sender, got);
        continue;
      }
      if (!p.servers.empty()) key_bytes_[k] = got.size();  // slicing applies here
      if (!p.destinations.empty()) {
        const Buffer& dest = p.destinations[at];
        if (got.data() != dest.data()) {
          // The transport could not place it (tcp, or a small eager message).
          if (got.size() != dest.size()) {
            if (p.status.ok()) {
              p.status = absl::InvalidArgumentError(absl::StrFormat(
                  "key %d: %d bytes arrived for a %d-byte destination", k, got.size(),
                  dest.size()));
            }
            continue;
          }
          std::memcpy(dest.data(), got.data(), got.size());
          bytes_copied_.fetch_add(got.size(), std::memory_order_relaxed);
        }
        p.values[at] = dest;
        continue;
      }
      p.values[at] = std::move(got);
    }
  }
  if (--p.outstanding <= 0) Finish(h.timestamp, lock);
}

void KVClient::Finish(int ts, std::unique_lock<std::mutex>& lock) {
  auto it = pending_.find(ts);
  if (it == pending_.end() || it->second.completing) return;
  Pending& p = it->second;
  p.completing = true;
  if (Completion done = std::move(p.done)) {
    // The completion may copy out of the received frames; it runs without
    // our lock so that it can submit follow-up requests. Wait() returns only
    // after it, so a caller never sees a half-filled output.
    std::vector<Buffer> values = std::move(p.values);
    absl::Status status = p.status;
    lock.unlock();
    done(status, values);
    lock.lock();
    it = pending_.find(ts);
  }
  if (it->second.detached) {
    pending_.erase(it);
  } else {
    it->second.finished = true;
  }
  cv_.notify_all();
}

absl::Status KVClient::Wait(int ts) {
  std::unique_lock<std::mutex> lock(mu_);
  auto it = pending_.find(ts);
  if (it == pending_.end()) {
    return absl::InvalidArgumentError(absl::StrFormat("no request with timestamp %d", ts));
  }
  cv_.wait(lock, [&] { return it->second.finished; });
  absl::Status s = it->second.status;
  pending_.erase(it);
  return s;
}

void KVClient::Fail(const absl::Status& status) {
  std::unique_lock<std::mutex> lock(mu_);
  if (failed_.ok()) failed_ = status;
  std::vector<int> open;
  for (auto& [ts, p] : pending_) {
    if (p.completing) continue;
    if (p.status.ok()) p.status = status;
    open.push_back(ts);
  }
  for (int ts : open) Finish(ts, lock);
}

}  // namespace geops
