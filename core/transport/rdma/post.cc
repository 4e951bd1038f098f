// Posting work requests on one rdma connection, under its lock.
//
// A message that fits a receive slot (with its frame) is SENT in one work
// request: inline from the stack when the device takes it inline (no
// registered memory, no pool), else from a registered send slot. A larger
// one is written straight into the places its recipient advertised when it
// did (one-sided), else goes by rendezvous. Large segments are written from
// the caller's Buffers when their owner was Register()ed; the transport
// never registers memory behind the caller's back (that would be a
// registration per message for memory that is fresh each time), it bounces
// it through the pool instead, and counts the copy. A connection that is
// still coming up, or whose send queue is full, keeps its messages in order
// in a backlog that completions drain.
#include <arpa/inet.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_format.h"
#include "core/base/log.h"
#include "core/transport/rdma/rdma_transport.h"
#include "core/wire/codec.h"

namespace geops {
namespace {

// The largest frame sent inline from the stack; devices take at most a
// few hundred bytes inline (CreateQp asks for 256).
constexpr size_t kMaxInlineFrame = 512;

}  // namespace

void RdmaTransport::CountCopy(const Message& m, size_t i, size_t bytes) {
  if (m.IsValueSegment(i)) stats_.bytes_copied.fetch_add(bytes, std::memory_order_relaxed);
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
  if (rdma::EagerFrameBytes(m.msg, m.adverts.size()) <= options_.rdma_slot_bytes) {
    if (c.sq_used + 1 > options_.send_depth) return absl::OkStatus();
    *posted = true;
    return PostEagerLocked(c, m.msg, m.adverts);
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

absl::Status RdmaTransport::PostEagerLocked(Conn& c, const Message& m,
                                            const std::vector<rdma::Advert>& adverts) {
  const size_t total = rdma::EagerFrameBytes(m, adverts.size());
  // Small values are cheaper to copy than to register; the copy is
  // counted so the zero-copy promise stays measurable.
  for (size_t i = 0; i < m.segments.size(); ++i) CountCopy(m, i, m.segments[i].size());
  ibv_send_wr wr{};
  wr.num_sge = 1;
  wr.opcode = IBV_WR_SEND;
  if (total <= std::min<size_t>(max_inline_.load(std::memory_order_relaxed), kMaxInlineFrame)) {
    // The device copies an inline frame when it is posted: it needs no
    // registration and is not held until completion.
    alignas(8) std::byte frame[kMaxInlineFrame];
    rdma::EncodeEagerFrame(m, adverts, frame);
    ibv_sge sge{reinterpret_cast<uintptr_t>(frame), static_cast<uint32_t>(total), 0};
    wr.sg_list = &sge;
    wr.send_flags = IBV_SEND_INLINE;
    return PostSendLocked(c, &wr, 1, {}, false);
  }
  auto slot = pool_->Get(total);
  if (!slot.ok()) return slot.status();
  rdma::EncodeEagerFrame(m, adverts, slot->data());
  ibv_sge sge{reinterpret_cast<uintptr_t>(slot->data()), static_cast<uint32_t>(total),
              rdma::RegionOf(*device_, *slot)->lkey};
  wr.sg_list = &sge;
  if (total <= max_inline_.load(std::memory_order_relaxed)) wr.send_flags = IBV_SEND_INLINE;
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
  CountCopy(m, i, s.size());
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
  const uint64_t id = rdv_.AddSend(job);
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
  const size_t total = rdma::PlacedFrameBytes(m);
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
