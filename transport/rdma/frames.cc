// The frames of the rdma transport (frames.h) and one handler per frame
// type: an eager message is decoded and delivered; an RTS gets targets
// (announced ones, else pool memory) and a CTS back; a CTS starts the
// writes of the rendezvous it answers; the immediate of the last write
// completes a message.
#include "transport/rdma/frames.h"

#include "absl/strings/str_format.h"
#include "core/base/log.h"
#include "core/wire/codec.h"
#include "transport/rdma/rdma_transport.h"

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

Buffer MakeFrame(FrameHeader header, const void* body, size_t body_bytes) {
  Buffer frame = Buffer::Allocate(sizeof(header) + body_bytes);
  std::memcpy(frame.data(), &header, sizeof(header));
  if (body_bytes > 0) std::memcpy(frame.data() + sizeof(header), body, body_bytes);
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
    case rdma::kEager: return OnEager(std::move(f->body), origin);
    case rdma::kRts: return OnRts(*c, f->header, std::move(f->body), origin);
    case rdma::kCts: return OnCts(*c, f->header, std::move(f->body));
    default:
      stats_.malformed.fetch_add(1);
      log::Warn("rdma: dropped a frame of unknown type %d", f->header.type);
  }
}

void RdmaTransport::OnEager(Buffer body, uint64_t origin) {
  Deliver(wire::DecodeFlat(body), origin);
}

void RdmaTransport::OnRts(Conn& c, const rdma::FrameHeader& f, Buffer body, uint64_t origin) {
  auto info = wire::DecodeHeader({body.data(), body.size()});
  if (!info.ok()) {
    stats_.malformed.fetch_add(1);
    log::Warn("rdma: dropped a rendezvous request: %s", info.status().message());
    return;
  }
  const Header& h = info->header;
  std::vector<Buffer> targets(info->lengths.size());
  {
    // A message whose destination was announced (ExpectInto) lands in it,
    // segment by segment where the sizes agree.
    absl::MutexLock lock(&rdv_mu_);
    auto it = expected_.find({h.sender, h.timestamp});
    if (it != expected_.end()) {
      for (size_t i = 1; i < targets.size() && i - 1 < it->second.size(); ++i) {
        const Buffer& dst = it->second[i - 1];
        if (dst.size() == info->lengths[i] && rdma::EnsureRegistered(device_, dst).ok()) {
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
  Buffer frame = rdma::MakeFrame({rdma::kCts, static_cast<uint32_t>(cts.size()), f.id},
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
