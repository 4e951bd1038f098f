// The rdma transport's Transport calls and the posting of work requests.
//
// Send picks a path (frames.h): a message that fits a receive slot (with
// its frame) is copied into a registered send slot and SENT in one work
// request, inline when small; a larger one is written straight into the
// places its recipient advertised when it did (one-sided), else goes by
// rendezvous. Large segments are written from the caller's Buffers when
// their owner was Register()ed; the transport never registers memory
// behind the caller's back (that would be a registration per message for
// memory that is fresh each time), it bounces it through the pool
// instead, and counts the copy. A connection that is still coming up, or
// whose send queue is full, keeps its messages in order in a backlog that
// completions drain.
#include "core/transport/rdma/rdma_transport.h"

#include <arpa/inet.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_format.h"
#include "core/base/log.h"
#include "core/wire/codec.h"

namespace geops {
namespace {

absl::Status Errno(const std::string& what) {
  return absl::UnavailableError(absl::StrFormat("rdma: %s: %s", what, std::strerror(errno)));
}

// Values (segments after the keys of a data message) are what the
// zero-copy promise is about; copies of them are counted.
bool IsValuesSegment(const Message& m, size_t i) {
  return m.header.command == Command::kData && i >= 1;
}

size_t FlatSize(const rdma::OutMessage& m) {
  return sizeof(rdma::FrameHeader) + m.adverts.size() * sizeof(rdma::Advert) +
         wire::EncodedHeaderSize(m.msg.segments.size()) + m.msg.payload_bytes();
}

// The kPlaced frame: the header and segment 0 travel, the rest is written.
size_t PlacedSize(const Message& m) {
  return sizeof(rdma::FrameHeader) + wire::EncodedHeaderSize(m.segments.size()) +
         (m.segments.empty() ? 0 : m.segments[0].size());
}

}  // namespace

namespace rdma {

absl::Status ProbeDevice() {
  int n = 0;
  ibv_device** list = ibv_get_device_list(&n);
  if (list) ibv_free_device_list(list);
  if (n > 0) return absl::OkStatus();
  return absl::FailedPreconditionError(
      "rdma: no RDMA device on this machine (ibv_get_device_list found none): load a driver "
      "or SoftRoCE (deploy/softroce/softroce.sh up <netdev>), pass /dev/infiniband to the "
      "container, or unset DMLC_PS_VAN_TYPE / DMLC_ENABLE_RDMA to use TCP");
}

}  // namespace rdma

absl::StatusOr<std::unique_ptr<Transport>> MakeRdmaTransport(const RdmaOptions& options) {
  auto t = RdmaTransport::Create(options);
  if (!t.ok()) return t.status();
  return std::unique_ptr<Transport>(std::move(*t));
}

absl::StatusOr<std::unique_ptr<RdmaTransport>> RdmaTransport::Create(RdmaOptions options) {
  if (auto s = rdma::ProbeDevice(); !s.ok()) return s;
#ifdef NDEBUG
  // An abseil built without NDEBUG (Debian's is) checks every Mutex
  // acquisition against a process-wide lock graph, behind one global lock:
  // on this path that is a shared lock per completion and per message.
  // Release builds of geops rely on the compiler's check of the lock
  // annotations (clang -Wthread-safety) instead; debug builds keep it.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
#endif
  std::unique_ptr<RdmaTransport> t(new RdmaTransport(std::move(options)));
  t->events_.reset(rdma_create_event_channel());
  if (!t->events_) return Errno("rdma_create_event_channel");
  t->cm_thread_ = std::thread([p = t.get()] { p->CmLoop(); });
  return t;
}

RdmaTransport::RdmaTransport(RdmaOptions options)
    : options_(std::move(options)), gate_(options_.spin) {}

RdmaTransport::~RdmaTransport() {
  Shutdown();
  if (cm_thread_.joinable()) cm_thread_.join();
  if (progress_thread_.joinable()) progress_thread_.join();
  {
    absl::MutexLock lock(&conns_mu_);
    for (auto& c : conns_) {
      absl::MutexLock cl(&c->mu);
      if (c->id && c->state == Conn::State::kUp) rdma_disconnect(c->id.get());
    }
    peers_.clear();
    by_qp_.clear();
    conns_.clear();  // destroys QPs and ids
  }
  {
    absl::MutexLock lock(&slots_mu_);
    posted_slots_.clear();
    free_slots_.clear();
  }
  {
    absl::MutexLock lock(&rdv_mu_);
    pending_recvs_.clear();
    pending_sends_.clear();
    expected_.clear();
  }
  {
    absl::MutexLock lock(&queue_mu_);
    queue_.clear();
  }
  listen_id_.reset();
  srq_.reset();
  cq_.reset();
  comp_channel_.reset();
  // Registrations still held by live Buffers keep the device, and so the
  // protection domain, alive; the last of them deallocates it.
  pool_.reset();
  if (device_) device_->registrations = nullptr;
  device_.reset();
  events_.reset();
}

void RdmaTransport::Shutdown() {
  stopping_.store(true);
  absl::MutexLock lock(&queue_mu_);
  queue_cv_.SignalAll();
}

absl::Status RdmaTransport::Register(const Buffer& buf) {
  if (!device_) return absl::FailedPreconditionError("rdma: Register() before Listen()");
  auto r = rdma::EnsureRegistered(device_, buf);
  return r.ok() ? absl::OkStatus() : r.status();
}

bool RdmaTransport::ExpectInto(int peer_id, int timestamp, std::vector<Buffer> targets) {
  absl::MutexLock lock(&rdv_mu_);
  expected_[{peer_id, timestamp}] = std::move(targets);
  return true;
}

rdma::OutMessage RdmaTransport::Prepare(const Message& msg) {
  rdma::OutMessage out{msg, {}, {}};
  const std::pair<int, int> key{msg.header.recipient, msg.header.timestamp};
  absl::MutexLock lock(&rdv_mu_);
  // Our places for the recipient's answer, when every one is registered.
  if (auto it = expected_.find(key); it != expected_.end() && !it->second.empty()) {
    for (const Buffer& t : it->second) {
      const rdma::MemoryRegion* r = t.empty() ? nullptr : rdma::RegionOf(*device_, t);
      if (r == nullptr) {
        out.adverts.clear();
        break;
      }
      out.adverts.push_back({reinterpret_cast<uint64_t>(t.data()), t.size(), r->rkey, 0});
    }
  }
  // The recipient's places for this message: usable when every value
  // segment has exactly its advertised length.
  if (auto it = adverts_.find(key); it != adverts_.end()) {
    std::vector<rdma::Advert> place = std::move(it->second);
    adverts_.erase(it);
    bool fits = place.size() + 1 == msg.segments.size() &&
                PlacedSize(msg) <= options_.rdma_slot_bytes;
    for (size_t i = 0; fits && i < place.size(); ++i) {
      fits = place[i].length == msg.segments[i + 1].size();
    }
    if (fits) out.place = std::move(place);
  }
  return out;
}

absl::Status RdmaTransport::Send(const Message& msg) {
  std::shared_ptr<Conn> c;
  {
    absl::MutexLock lock(&conns_mu_);
    auto it = peers_.find(msg.header.recipient);
    if (it == peers_.end()) {
      return absl::NotFoundError(absl::StrFormat("no connection to node %d", msg.header.recipient));
    }
    c = it->second;
  }
  rdma::OutMessage m = Prepare(msg);
  absl::MutexLock lock(&c->mu);
  if (c->state == Conn::State::kDown) return absl::UnavailableError("rdma: " + c->error);
  stats_.messages_sent.fetch_add(1, std::memory_order_relaxed);
  stats_.bytes_sent.fetch_add(wire::EncodedHeaderSize(msg.segments.size()) + msg.payload_bytes(),
                              std::memory_order_relaxed);
  if (c->state == Conn::State::kUp && c->backlog.empty() &&
      c->sq_used + 1 <= options_.send_depth && FlatSize(m) <= options_.rdma_slot_bytes) {
    // The common small message: straight onto the wire.
    return PostEagerLocked(*c, m);
  }
  Outgoing out = std::move(m);
  if (c->state == Conn::State::kUp && c->backlog.empty()) {
    bool posted = false;
    if (auto s = PostLocked(*c, out, &posted); !s.ok()) return s;
    if (posted) return absl::OkStatus();
  }
  c->backlog.push_back(std::move(out));
  return absl::OkStatus();
}

void RdmaTransport::QueueOrPost(Conn& c, Outgoing out) {
  bool posted = false;
  if (c.state == Conn::State::kUp && c.backlog.empty()) {
    if (auto s = PostLocked(c, out, &posted); !s.ok()) {
      log::Warn("rdma: cannot post a rendezvous frame: %s", s.message());
      return;
    }
  }
  if (!posted) c.backlog.push_back(std::move(out));
}

void RdmaTransport::FlushLocked(Conn& c) {
  while (c.state == Conn::State::kUp && !c.backlog.empty()) {
    bool posted = false;
    if (auto s = PostLocked(c, c.backlog.front(), &posted); !s.ok()) {
      log::Warn("rdma: dropped a queued message: %s", s.message());
      c.backlog.pop_front();
      continue;
    }
    if (!posted) return;  // the send queue is full; a completion resumes us
    c.backlog.pop_front();
  }
}

absl::Status RdmaTransport::PostLocked(Conn& c, Outgoing& out, bool* posted) {
  *posted = false;
  if (auto* frame = std::get_if<Buffer>(&out)) {
    if (c.sq_used + 1 > options_.send_depth) return absl::OkStatus();
    *posted = true;
    return PostControlLocked(c, std::move(*frame));
  }
  if (auto* job = std::get_if<std::shared_ptr<WriteJob>>(&out)) {
    // Writes need one work request per non-empty segment plus the final one.
    if (c.sq_used + static_cast<int>((*job)->msg.segments.size()) + 1 > options_.send_depth) {
      return absl::OkStatus();
    }
    *posted = true;
    return PostWritesLocked(c, **job);
  }
  const OutMessage& m = std::get<OutMessage>(out);
  if (FlatSize(m) <= options_.rdma_slot_bytes) {
    if (c.sq_used + 1 > options_.send_depth) return absl::OkStatus();
    *posted = true;
    return PostEagerLocked(c, m);
  }
  if (!m.place.empty()) {
    // A write per value segment, then the kPlaced SEND.
    if (c.sq_used + static_cast<int>(m.msg.segments.size()) > options_.send_depth) {
      return absl::OkStatus();
    }
    *posted = true;
    return PostPlacedLocked(c, m);
  }
  if (c.sq_used + 1 > options_.send_depth) return absl::OkStatus();
  *posted = true;
  return PostRtsLocked(c, m);
}

absl::Status RdmaTransport::PostEagerLocked(Conn& c, const OutMessage& om) {
  const Message& m = om.msg;
  const size_t header_size = wire::EncodedHeaderSize(m.segments.size());
  const size_t total = FlatSize(om);
  auto slot = pool_->Get(total);
  if (!slot.ok()) return slot.status();
  rdma::FrameHeader f{rdma::kEager, static_cast<uint32_t>(om.adverts.size()), 0};
  std::byte* p = slot->data();
  std::memcpy(p, &f, sizeof(f));
  size_t off = sizeof(f);
  if (!om.adverts.empty()) {
    std::memcpy(p + off, om.adverts.data(), om.adverts.size() * sizeof(rdma::Advert));
    off += om.adverts.size() * sizeof(rdma::Advert);
  }
  wire::EncodeHeaderInto(m, p + off);
  off += header_size;
  for (size_t i = 0; i < m.segments.size(); ++i) {
    const Buffer& s = m.segments[i];
    if (s.size()) std::memcpy(p + off, s.data(), s.size());
    // Small values are cheaper to copy than to register; the copy is
    // counted so the zero-copy promise stays measurable.
    if (IsValuesSegment(m, i)) stats_.bytes_copied.fetch_add(s.size(), std::memory_order_relaxed);
    off += s.size();
  }
  ibv_sge sge{reinterpret_cast<uintptr_t>(p), static_cast<uint32_t>(total),
              rdma::RegionOf(*device_, *slot)->lkey};
  ibv_send_wr wr{};
  wr.sg_list = &sge;
  wr.num_sge = 1;
  wr.opcode = IBV_WR_SEND;
  if (total <= max_inline_.load(std::memory_order_relaxed)) wr.send_flags |= IBV_SEND_INLINE;
  return PostSendLocked(c, &wr, 1, {std::move(*slot)}, false);
}

absl::Status RdmaTransport::PostControlLocked(Conn& c, Buffer frame) {
  auto slot = pool_->Get(frame.size());
  if (!slot.ok()) return slot.status();
  std::memcpy(slot->data(), frame.data(), frame.size());
  ibv_sge sge{reinterpret_cast<uintptr_t>(slot->data()), static_cast<uint32_t>(frame.size()),
              rdma::RegionOf(*device_, *slot)->lkey};
  ibv_send_wr wr{};
  wr.sg_list = &sge;
  wr.num_sge = 1;
  wr.opcode = IBV_WR_SEND;
  if (frame.size() <= max_inline_.load(std::memory_order_relaxed)) {
    wr.send_flags |= IBV_SEND_INLINE;
  }
  return PostSendLocked(c, &wr, 1, {std::move(*slot)}, false);
}

absl::StatusOr<Buffer> RdmaTransport::SourceOf(const Message& m, size_t i) {
  const Buffer& s = m.segments[i];
  if (rdma::RegionOf(*device_, s) != nullptr) return s;
  // Memory nobody registered: a party server's results that came over tcp,
  // a request's keys, fresh each message. A copy into a pool chunk
  // (registered once, reused) costs less than a registration per message.
  auto copy = pool_->Get(s.size());
  if (!copy.ok()) return copy.status();
  std::memcpy(copy->data(), s.data(), s.size());
  if (IsValuesSegment(m, i)) stats_.bytes_copied.fetch_add(s.size(), std::memory_order_relaxed);
  return std::move(*copy);
}

absl::Status RdmaTransport::PostRtsLocked(Conn& c, const OutMessage& om) {
  const Message& m = om.msg;
  auto job = std::make_shared<WriteJob>();
  job->msg = m;
  // Sources are made ready now, so that the CTS finds nothing left to fail.
  for (size_t i = 0; i < job->msg.segments.size(); ++i) {
    if (job->msg.segments[i].empty()) continue;
    auto src = SourceOf(m, i);
    if (!src.ok()) return src.status();
    job->msg.segments[i] = std::move(*src);
  }
  Buffer header = wire::EncodeHeader(m);
  uint64_t id;
  {
    absl::MutexLock lock(&rdv_mu_);
    id = next_send_id_++;
    pending_sends_[id] = job;
  }
  return PostControlLocked(
      c, rdma::MakeFrame({rdma::kRts, static_cast<uint32_t>(om.adverts.size()), id}, om.adverts,
                         header.data(), header.size()));
}

absl::Status RdmaTransport::PostPlacedLocked(Conn& c, const OutMessage& om) {
  const Message& m = om.msg;
  const size_t n = m.segments.size();
  std::vector<Buffer> keep;
  keep.reserve(n);
  // One write per non-empty value segment, then the SEND.
  std::vector<ibv_sge> sges(n + 1);
  std::vector<ibv_send_wr> wrs(n + 1);
  int w = 0;
  for (size_t i = 1; i < n; ++i) {
    if (m.segments[i].empty()) continue;
    auto src = SourceOf(m, i);
    if (!src.ok()) return src.status();
    sges[w] = {reinterpret_cast<uintptr_t>(src->data()), static_cast<uint32_t>(src->size()),
               rdma::RegionOf(*device_, *src)->lkey};
    ibv_send_wr& wr = wrs[w];
    wr = {};
    wr.sg_list = &sges[w];
    wr.num_sge = 1;
    wr.opcode = IBV_WR_RDMA_WRITE;
    wr.wr.rdma.remote_addr = om.place[i - 1].addr;
    wr.wr.rdma.rkey = om.place[i - 1].rkey;
    keep.push_back(std::move(*src));
    ++w;
  }
  // The header and the keys follow in a SEND, which RC delivers after the
  // writes: its arrival completes the message.
  const size_t header_size = wire::EncodedHeaderSize(n);
  const size_t total = PlacedSize(m);
  auto slot = pool_->Get(total);
  if (!slot.ok()) return slot.status();
  rdma::FrameHeader f{rdma::kPlaced, static_cast<uint32_t>(n), 0};
  std::byte* p = slot->data();
  std::memcpy(p, &f, sizeof(f));
  wire::EncodeHeaderInto(m, p + sizeof(f));
  if (n > 0 && !m.segments[0].empty()) {
    std::memcpy(p + sizeof(f) + header_size, m.segments[0].data(), m.segments[0].size());
  }
  sges[w] = {reinterpret_cast<uintptr_t>(p), static_cast<uint32_t>(total),
             rdma::RegionOf(*device_, *slot)->lkey};
  ibv_send_wr& send = wrs[w];
  send = {};
  send.sg_list = &sges[w];
  send.num_sge = 1;
  send.opcode = IBV_WR_SEND;
  if (total <= max_inline_.load(std::memory_order_relaxed)) send.send_flags |= IBV_SEND_INLINE;
  keep.push_back(std::move(*slot));
  for (int i = 0; i < w; ++i) wrs[i].next = &wrs[i + 1];
  // Signalled: the sources are the caller's buffers.
  return PostSendLocked(c, wrs.data(), w + 1, std::move(keep), /*force_signal=*/true);
}

absl::Status RdmaTransport::PostWritesLocked(Conn& c, WriteJob& job) {
  const auto& segs = job.msg.segments;
  std::vector<ibv_sge> sges(segs.size());
  std::vector<ibv_send_wr> wrs(segs.size() + 1);
  int n = 0;
  for (size_t i = 0; i < segs.size(); ++i) {
    if (segs[i].empty()) continue;
    sges[i] = {reinterpret_cast<uintptr_t>(segs[i].data()), static_cast<uint32_t>(segs[i].size()),
               rdma::RegionOf(*device_, segs[i])->lkey};
    ibv_send_wr& wr = wrs[n++];
    wr = {};
    wr.sg_list = &sges[i];
    wr.num_sge = 1;
    wr.opcode = IBV_WR_RDMA_WRITE;
    wr.wr.rdma.remote_addr = job.targets[i].addr;
    wr.wr.rdma.rkey = job.targets[i].rkey;
  }
  // The immediate completes the message at the receiver; RC delivers it
  // after every write before it.
  uint32_t token = job.targets.empty() ? 0 : job.targets[0].token;
  if (n > 0) {
    wrs[n - 1].opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
    wrs[n - 1].imm_data = htonl(token);
  } else {
    ibv_send_wr& wr = wrs[n++];
    wr = {};
    wr.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
    wr.imm_data = htonl(token);
  }
  for (int i = 0; i + 1 < n; ++i) wrs[i].next = &wrs[i + 1];
  std::vector<Buffer> keep(segs.begin(), segs.end());
  return PostSendLocked(c, wrs.data(), n, std::move(keep), /*force_signal=*/true);
}

absl::Status RdmaTransport::PostSendLocked(Conn& c, ibv_send_wr* wr, int wrs,
                                           std::vector<Buffer> keep, bool force_signal) {
  // Selective signalling: one completion per signal_every requests, and
  // always for the last write of a rendezvous, whose sources are the
  // caller's buffers.
  ibv_send_wr* last = wr;
  for (int i = 1; i < wrs; ++i) last = last->next;
  for (ibv_send_wr* w = wr; w != nullptr; w = w->next) w->wr_id = ++c.next_seq;
  c.unsignaled += wrs;
  if (force_signal || c.unsignaled >= options_.signal_every ||
      c.sq_used + wrs >= options_.send_depth - 1) {
    last->send_flags |= IBV_SEND_SIGNALED;
    c.unsignaled = 0;
  }
  ibv_send_wr* bad = nullptr;
  if (ibv_post_send(c.id->qp, wr, &bad) != 0) {
    return absl::UnavailableError(
        absl::StrFormat("rdma: ibv_post_send failed: %s", std::strerror(errno)));
  }
  for (ibv_send_wr* w = wr; w != nullptr; w = w->next) {
    c.held.emplace_back(w->wr_id, w == last ? std::move(keep) : std::vector<Buffer>());
  }
  c.sq_used += wrs;
  return absl::OkStatus();
}

}  // namespace geops
