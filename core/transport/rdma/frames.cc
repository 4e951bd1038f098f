// The frames of the rdma transport (frames.h): sizes, encoding, parsing.
// What each frame does on arrival is in handlers.cc.
#include "core/transport/rdma/frames.h"

#include "absl/strings/str_format.h"
#include "core/wire/codec.h"

namespace geops::rdma {

size_t EagerFrameBytes(const Message& m, size_t adverts) {
  return sizeof(FrameHeader) + adverts * sizeof(Advert) +
         wire::EncodedHeaderSize(m.segments.size()) + m.payload_bytes();
}

size_t PlacedFrameBytes(const Message& m) {
  // The header and segment 0 travel, the rest is written.
  return sizeof(FrameHeader) + wire::EncodedHeaderSize(m.segments.size()) +
         (m.segments.empty() ? 0 : m.segments[0].size());
}

void EncodeEagerFrame(const Message& m, const std::vector<Advert>& adverts, std::byte* out) {
  FrameHeader f{kEager, static_cast<uint32_t>(adverts.size()), 0};
  std::memcpy(out, &f, sizeof(f));
  size_t off = sizeof(f);
  if (!adverts.empty()) {
    std::memcpy(out + off, adverts.data(), adverts.size() * sizeof(Advert));
    off += adverts.size() * sizeof(Advert);
  }
  wire::EncodeHeaderInto(m, out + off);
  off += wire::EncodedHeaderSize(m.segments.size());
  for (const Buffer& s : m.segments) {
    if (s.size()) std::memcpy(out + off, s.data(), s.size());
    off += s.size();
  }
}

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

}  // namespace geops::rdma
