// What the rdma transport does with each completion Progress hands it, and
// one handler per frame type: an eager message is decoded and delivered;
// an RTS gets targets (announced ones, else pool memory) and a CTS back; a
// CTS starts the writes of the rendezvous it answers; the immediate of the
// last write completes a message; a kPlaced frame completes a message
// whose values were written into announced targets. Adverts riding on
// eager and RTS frames are kept for the answer. All of it runs under
// Progress's poll lock.
#include <arpa/inet.h>

#include "absl/strings/str_format.h"
#include "core/base/log.h"
#include "core/transport/rdma/rdma_transport.h"
#include "core/wire/codec.h"

namespace geops {

void RdmaTransport::OnReceive(const ibv_wc& wc, Buffer slot) {
  if (wc.status != IBV_WC_SUCCESS) {
    if (wc.status != IBV_WC_WR_FLUSH_ERR) {
      log::Warn("rdma: receive failed: %s", ibv_wc_status_str(wc.status));
    }
    return;
  }
  if (wc.opcode == IBV_WC_RECV_RDMA_WITH_IMM) {
    OnWritesDone(ntohl(wc.imm_data));
    return;
  }
  HandleFrame(wc.qp_num, slot.Slice(0, wc.byte_len));
}

void RdmaTransport::OnSendDone(const ibv_wc& wc) {
  Conn* c = conns_.ByQp(wc.qp_num);
  if (c == nullptr) return;
  if (wc.status != IBV_WC_SUCCESS) {
    FailConn(*c, absl::StrFormat("send to %s failed: %s",
                                 c->outgoing ? absl::StrFormat("node %d", c->peer)
                                             : std::string("a peer"),
                                 ibv_wc_status_str(wc.status)));
    absl::MutexLock lock(&c->mu);
    c->held.clear();
    c->sq_used = 0;
    return;
  }
  std::vector<std::vector<Buffer>> release;  // dropped after the lock
  absl::MutexLock lock(&c->mu);
  while (!c->held.empty() && c->held.front().first <= wc.wr_id) {
    release.push_back(std::move(c->held.front().second));
    c->held.pop_front();
    --c->sq_used;
  }
  FlushLocked(*c);
}

void RdmaTransport::HandleFrame(uint32_t qp_num, Buffer slot) {
  const uint64_t origin = rdma::OriginOfQp(qp_num);
  auto f = rdma::ParseFrame(slot);
  if (!f.ok()) {
    stats_.malformed.fetch_add(1);
    log::Warn("rdma: dropped %s", f.status().message());
    return;
  }
  // An eager frame needs nothing of its connection: no lookup on the path
  // of small messages.
  Conn* c = f->header.type == rdma::kEager ? nullptr : conns_.ByQp(qp_num);
  if (f->header.type != rdma::kEager && c == nullptr) {
    stats_.malformed.fetch_add(1);
    log::Warn("rdma: dropped a frame from an unknown connection");
    return;
  }
  switch (f->header.type) {
    case rdma::kEager: return OnEager(f->header, std::move(f->body), origin);
    case rdma::kRts: return OnRts(*c, f->header, std::move(f->body), origin);
    case rdma::kCts: return OnCts(*c, f->header, std::move(f->body));
    case rdma::kPlaced: return OnPlaced(f->header, std::move(f->body), origin);
    default:
      stats_.malformed.fetch_add(1);
      log::Warn("rdma: dropped a frame of unknown type %d", f->header.type);
  }
}

void RdmaTransport::OnEager(const rdma::FrameHeader& f, Buffer body, uint64_t origin) {
  auto adverts = rdma::TakeAdverts(f, body);
  if (!adverts.ok()) {
    stats_.malformed.fetch_add(1);
    log::Warn("rdma: dropped %s", adverts.status().message());
    return;
  }
  auto decoded = wire::DecodeFlat(body);
  if (decoded.ok()) {
    rdv_.RememberAdverts(decoded->header.sender, decoded->header.timestamp, std::move(*adverts));
  }
  Deliver(std::move(decoded), origin);
}

void RdmaTransport::OnRts(Conn& c, const rdma::FrameHeader& f, Buffer body, uint64_t origin) {
  auto adverts = rdma::TakeAdverts(f, body);
  absl::StatusOr<wire::HeaderInfo> info =
      adverts.ok() ? wire::DecodeHeader({body.data(), body.size()})
                   : absl::StatusOr<wire::HeaderInfo>(adverts.status());
  if (!info.ok()) {
    stats_.malformed.fetch_add(1);
    log::Warn("rdma: dropped a rendezvous request: %s", info.status().message());
    return;
  }
  const Header& h = info->header;
  rdv_.RememberAdverts(h.sender, h.timestamp, std::move(*adverts));
  std::vector<Buffer> targets(info->lengths.size());
  // A message whose destination was announced (ExpectInto) lands in it,
  // segment by segment where the sizes agree.
  if (auto expected = rdv_.TakeExpected(h.sender, h.timestamp)) {
    for (size_t i = 1; i < targets.size() && i - 1 < expected->size(); ++i) {
      const Buffer& dst = (*expected)[i - 1];
      if (dst.size() == info->lengths[i] && rdma::RegionOf(*device_, dst) != nullptr) {
        targets[i] = dst;
      }
    }
  }
  uint64_t rest = 0;
  for (size_t i = 0; i < targets.size(); ++i) {
    if (targets[i].empty()) rest += info->lengths[i];
  }
  Buffer landing;
  if (rest > 0) {
    auto b = pool_->Get(rest);
    if (!b.ok()) {
      log::Error("%s; message from node %d dropped", b.status().message(), h.sender);
      stats_.malformed.fetch_add(1);
      return;
    }
    landing = std::move(*b);
  }
  uint64_t off = 0;
  for (size_t i = 0; i < targets.size(); ++i) {
    if (!targets[i].empty()) continue;
    targets[i] = landing.Slice(off, info->lengths[i]);
    off += info->lengths[i];
  }
  std::vector<rdma::CtsTarget> cts(targets.size());
  for (size_t i = 0; i < targets.size(); ++i) {
    const rdma::MemoryRegion* r =
        targets[i].size() ? rdma::RegionOf(*device_, targets[i]) : nullptr;
    cts[i] = {reinterpret_cast<uint64_t>(targets[i].data()), r ? r->rkey : 0, 0};
  }
  // The token goes in after the targets are read: AddRecv hands them over.
  const uint32_t token =
      rdv_.AddRecv({Buffer::CopyOf(body.data(), body.size()), std::move(targets), origin});
  for (rdma::CtsTarget& t : cts) t.token = token;
  Buffer frame = rdma::MakeFrame({rdma::kCts, static_cast<uint32_t>(cts.size()), f.id}, {},
                                 cts.data(), cts.size() * sizeof(rdma::CtsTarget));
  absl::MutexLock lock(&c.mu);
  QueueOrPost(c, std::move(frame));
}

void RdmaTransport::OnCts(Conn& c, const rdma::FrameHeader& f, Buffer body) {
  std::shared_ptr<WriteJob> job = rdv_.TakeSend(f.id);
  if (!job || body.size() != f.count * sizeof(rdma::CtsTarget) ||
      f.count != job->msg.segments.size()) {
    stats_.malformed.fetch_add(1);
    log::Warn("rdma: dropped an unexpected rendezvous answer");
    return;
  }
  job->targets.resize(f.count);
  std::memcpy(job->targets.data(), body.data(), body.size());
  absl::MutexLock lock(&c.mu);
  QueueOrPost(c, std::move(job));
}

void RdmaTransport::OnPlaced(const rdma::FrameHeader& f, Buffer body, uint64_t origin) {
  auto fail = [&](const std::string& why) {
    stats_.malformed.fetch_add(1);
    log::Warn("rdma: dropped a placed message: %s", why);
  };
  const size_t header_size = wire::EncodedHeaderSize(std::min<uint32_t>(f.count, 1u << 20));
  if (f.count == 0 || body.size() < header_size) {
    return fail(absl::StrFormat("%d segments in %d bytes", f.count, body.size()));
  }
  auto info = wire::DecodeHeader({body.data(), header_size});
  if (!info.ok()) return fail(std::string(info.status().message()));
  const size_t n = info->lengths.size();
  if (body.size() != header_size + info->lengths[0]) {
    return fail(absl::StrFormat("%d bytes do not hold its header and keys", body.size()));
  }
  auto expected = rdv_.TakeExpected(info->header.sender, info->header.timestamp);
  if (!expected || expected->size() + 1 != n) {
    return fail(absl::StrFormat("node %d placed a message (timestamp %d) nobody announced",
                                info->header.sender, info->header.timestamp));
  }
  std::vector<Buffer> segments;
  segments.push_back(body.Slice(header_size, info->lengths[0]));
  for (size_t i = 1; i < n; ++i) {
    if ((*expected)[i - 1].size() != info->lengths[i]) {
      return fail(absl::StrFormat("segment %d is %d bytes, its place %d", i, info->lengths[i],
                                  (*expected)[i - 1].size()));
    }
    segments.push_back((*expected)[i - 1]);
  }
  Deliver(wire::Decode({body.data(), header_size}, std::move(segments)), origin);
}

void RdmaTransport::OnWritesDone(uint32_t token) {
  std::optional<rdma::PendingRecv> pr = rdv_.TakeRecv(token);
  if (!pr) {
    stats_.malformed.fetch_add(1);
    log::Warn("rdma: write completion for unknown message %d; dropped", token);
    return;
  }
  Deliver(wire::Decode({pr->header.data(), pr->header.size()}, std::move(pr->targets)),
          pr->origin);
}

void RdmaTransport::Deliver(absl::StatusOr<Message> decoded, uint64_t origin) {
  if (!decoded.ok()) {
    stats_.malformed.fetch_add(1);
    log::Warn("rdma: dropped a message: %s", decoded.status().message());
    return;
  }
  Message& m = *decoded;
  m.origin = origin;
  // A message that came another way leaves its announced destination
  // unused (the caller copies, and counts it).
  rdv_.ForgetExpected(m.header.sender, m.header.timestamp);
  stats_.messages_received.fetch_add(1, std::memory_order_relaxed);
  stats_.bytes_received.fetch_add(wire::EncodedHeaderSize(m.segments.size()) + m.payload_bytes(),
                                  std::memory_order_relaxed);
  delivered_.Push(std::move(m));
}

}  // namespace geops
