// The frames of the rdma transport (frames.h) and one handler per frame
// type: an eager message is decoded and delivered; an RTS gets targets
// (announced ones, else pool memory) and a CTS back; a CTS starts the
// writes of the rendezvous it answers; the immediate of the last write
// completes a message; a kPlaced frame completes a message whose values
// were written into announced targets. Adverts riding on eager and RTS
// frames are kept for the answer.
#include "core/transport/rdma/frames.h"

#include "absl/strings/str_format.h"
#include "core/base/log.h"
#include "core/wire/codec.h"
#include "core/transport/rdma/rdma_transport.h"

namespace geops {
namespace rdma {

absl::StatusOr<ParsedFrame> ParseFrame(const Buffer& slot) {
  if (slot.size() < sizeof(FrameHeader)) {
    return absl::DataLossError(absl::StrFormat("a %d-byte frame", slot.size()));
  }
  ParsedFrame f;
  std::memcpy(&f.header, slot.data(), sizeof(FrameHeader));
  f.body = slot.Slice(sizeof(FrameHeader), slot.size() - sizeof(FrameHeader));
  return f;
}

absl::StatusOr<std::vector<Advert>> TakeAdverts(const FrameHeader& f, Buffer& body) {
  if (f.count > kMaxAdverts || body.size() < f.count * sizeof(Advert)) {
    return absl::DataLossError(absl::StrFormat("a frame announcing %d places in %d bytes",
                                               f.count, body.size()));
  }
  std::vector<Advert> adverts(f.count);
  if (f.count > 0) std::memcpy(adverts.data(), body.data(), f.count * sizeof(Advert));
  body = body.Slice(f.count * sizeof(Advert), body.size() - f.count * sizeof(Advert));
  return adverts;
}

Buffer MakeFrame(FrameHeader header, const std::vector<Advert>& adverts, const void* body,
                 size_t body_bytes) {
  const size_t advert_bytes = adverts.size() * sizeof(Advert);
  Buffer frame = Buffer::Allocate(sizeof(header) + advert_bytes + body_bytes);
  std::memcpy(frame.data(), &header, sizeof(header));
  if (advert_bytes > 0) std::memcpy(frame.data() + sizeof(header), adverts.data(), advert_bytes);
  if (body_bytes > 0) {
    std::memcpy(frame.data() + sizeof(header) + advert_bytes, body, body_bytes);
  }
  return frame;
}

}  // namespace rdma

void RdmaTransport::HandleFrame(Conn* c, Buffer slot, uint64_t origin) {
  auto f = rdma::ParseFrame(slot);
  if (!f.ok()) {
    stats_.malformed.fetch_add(1);
    log::Warn("rdma: dropped %s", f.status().message());
    return;
  }
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

void RdmaTransport::RememberAdverts(int sender, int timestamp,
                                    std::vector<rdma::Advert> adverts) {
  if (adverts.empty()) return;
  absl::MutexLock lock(&rdv_mu_);
  adverts_[{sender, timestamp}] = std::move(adverts);
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
    RememberAdverts(decoded->header.sender, decoded->header.timestamp, std::move(*adverts));
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
  RememberAdverts(h.sender, h.timestamp, std::move(*adverts));
  std::vector<Buffer> targets(info->lengths.size());
  {
    // A message whose destination was announced (ExpectInto) lands in it,
    // segment by segment where the sizes agree.
    absl::MutexLock lock(&rdv_mu_);
    auto it = expected_.find({h.sender, h.timestamp});
    if (it != expected_.end()) {
      for (size_t i = 1; i < targets.size() && i - 1 < it->second.size(); ++i) {
        const Buffer& dst = it->second[i - 1];
        if (dst.size() == info->lengths[i] && rdma::RegionOf(*device_, dst) != nullptr) {
          targets[i] = dst;
        }
      }
      expected_.erase(it);
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
  {
    absl::MutexLock lock(&rdv_mu_);
    uint32_t token = next_token_++;
    if (next_token_ == 0) next_token_ = 1;
    for (size_t i = 0; i < targets.size(); ++i) {
      const rdma::MemoryRegion* r =
          targets[i].size() ? rdma::RegionOf(*device_, targets[i]) : nullptr;
      cts[i] = {reinterpret_cast<uint64_t>(targets[i].data()), r ? r->rkey : 0, token};
    }
    pending_recvs_[token] = {Buffer::CopyOf(body.data(), body.size()), std::move(targets),
                             origin};
  }
  Buffer frame = rdma::MakeFrame({rdma::kCts, static_cast<uint32_t>(cts.size()), f.id}, {},
                                 cts.data(), cts.size() * sizeof(rdma::CtsTarget));
  absl::MutexLock lock(&c.mu);
  QueueOrPost(c, std::move(frame));
}

void RdmaTransport::OnCts(Conn& c, const rdma::FrameHeader& f, Buffer body) {
  std::shared_ptr<WriteJob> job;
  {
    absl::MutexLock lock(&rdv_mu_);
    auto it = pending_sends_.find(f.id);
    if (it != pending_sends_.end()) {
      job = std::move(it->second);
      pending_sends_.erase(it);
    }
  }
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
  std::vector<Buffer> segments;
  {
    absl::MutexLock lock(&rdv_mu_);
    auto it = expected_.find({info->header.sender, info->header.timestamp});
    if (it == expected_.end() || it->second.size() + 1 != n) {
      return fail(absl::StrFormat("node %d placed a message (timestamp %d) nobody announced",
                                  info->header.sender, info->header.timestamp));
    }
    segments.push_back(body.Slice(header_size, info->lengths[0]));
    for (size_t i = 1; i < n; ++i) {
      if (it->second[i - 1].size() != info->lengths[i]) {
        return fail(absl::StrFormat("segment %d is %d bytes, its place %d", i, info->lengths[i],
                                    it->second[i - 1].size()));
      }
      segments.push_back(it->second[i - 1]);
    }
    expected_.erase(it);
  }
  Deliver(wire::Decode({body.data(), header_size}, std::move(segments)), origin);
}

void RdmaTransport::OnWritesDone(uint32_t token) {
  PendingRecv pr;
  {
    absl::MutexLock lock(&rdv_mu_);
    auto it = pending_recvs_.find(token);
    if (it == pending_recvs_.end()) {
      stats_.malformed.fetch_add(1);
      log::Warn("rdma: write completion for unknown message %d; dropped", token);
      return;
    }
    pr = std::move(it->second);
    pending_recvs_.erase(it);
  }
  Deliver(wire::Decode({pr.header.data(), pr.header.size()}, std::move(pr.targets)), pr.origin);
}

void RdmaTransport::Deliver(absl::StatusOr<Message> decoded, uint64_t origin) {
  if (!decoded.ok()) {
    stats_.malformed.fetch_add(1);
    log::Warn("rdma: dropped a message: %s", decoded.status().message());
    return;
  }
  Message& m = *decoded;
  m.origin = origin;
  {
    // A message that came another way leaves its announced destination
    // unused (the caller copies, and counts it).
    absl::MutexLock lock(&rdv_mu_);
    expected_.erase({m.header.sender, m.header.timestamp});
  }
  stats_.messages_received.fetch_add(1, std::memory_order_relaxed);
  stats_.bytes_received.fetch_add(wire::EncodedHeaderSize(m.segments.size()) + m.payload_bytes(),
                                  std::memory_order_relaxed);
  absl::MutexLock lock(&queue_mu_);
  queue_.push_back(std::move(m));
  queue_cv_.Signal();
}

}  // namespace geops
