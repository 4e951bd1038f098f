// What travels in one SEND of the rdma transport, and how a message is cut
// into frames.
//
//   kEager  FrameHeader{count} + `count` Adverts + the flat message
//           (header, then segments). A message that fits a receive slot,
//           in one SEND.
//   kRts    FrameHeader{id, count} + `count` Adverts + the encoded wire
//           header. The sender asks for targets for the message's segments.
//   kCts    FrameHeader{id, count} + `count` CtsTargets: where each segment
//           must be written, and the receiver's token for the message.
//           The sender then RDMA_WRITEs every segment from registered
//           memory, the last write carrying the token as immediate data,
//           which completes the message at the receiver (RC delivers it
//           after every write before it).
//   kPlaced FrameHeader{count: segments} + the encoded wire header +
//           segment 0. Sent after
//           the RDMA_WRITEs of segments 1.. into the places the receiver
//           advertised, with no RTS/CTS round trip; RC delivers it after
//           them, so it completes the message.
//
// One-sided placement: a message to peer P with timestamp T carries
// Adverts when ExpectInto(P, T, targets) announced where P's message with
// timestamp T must land (the targets must be registered). P remembers them
// by (sender, T); when P later sends a message to us with timestamp T
// whose segments 1.. have exactly the advertised lengths and whose frame
// fits a slot, it writes them in place and sends kPlaced; anything else
// takes the rendezvous (which still lands in announced targets) or the
// eager path. The frame says nothing of what a message means.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "absl/status/statusor.h"
#include "core/base/buffer.h"
#include "core/wire/message.h"

namespace geops::rdma {

enum FrameType : uint32_t { kEager = 1, kRts = 2, kCts = 3, kPlaced = 4 };

struct FrameHeader {
  uint32_t type;   // FrameType
  uint32_t count;  // kCts: CtsTargets that follow; kEager / kRts: Adverts;
                   // kPlaced: the message's segments
  uint64_t id;     // kRts / kCts: the sender's rendezvous id
};

// Where segment i + 1 of the answer must land: registered memory of the
// advertiser's, writable remotely with `rkey`.
struct Advert {
  uint64_t addr;
  uint64_t length;
  uint32_t rkey;
  uint32_t reserved;  // 0
};
// At most this many Adverts in one frame (a bound for the parser, far
// above any request's key count that fits a slot).
constexpr uint32_t kMaxAdverts = 4096;

struct CtsTarget {
  uint64_t addr;
  uint32_t rkey;
  uint32_t token;  // the receiver's id for this message (same in every entry)
};
static_assert(sizeof(FrameHeader) == 16 && sizeof(CtsTarget) == 16 && sizeof(Advert) == 24);

// The bytes of `m`'s kEager frame carrying `adverts` Adverts, and of its
// kPlaced frame: what must fit a receive slot for either path.
size_t EagerFrameBytes(const Message& m, size_t adverts);
size_t PlacedFrameBytes(const Message& m);
// Writes the kEager frame of `m` with `adverts` into `out`, which holds
// EagerFrameBytes(m, adverts.size()) bytes.
void EncodeEagerFrame(const Message& m, const std::vector<Advert>& adverts, std::byte* out);

// The frame header of a received SEND and what follows it; an error for a
// frame too short to have one.
struct ParsedFrame {
  FrameHeader header;
  Buffer body;
};
absl::StatusOr<ParsedFrame> ParseFrame(const Buffer& slot);

// Splits the Adverts that lead the body of an eager or RTS frame off it.
absl::StatusOr<std::vector<Advert>> TakeAdverts(const FrameHeader& f, Buffer& body);

// A control frame: `header`, `adverts`, then `body_bytes` of `body`.
Buffer MakeFrame(FrameHeader header, const std::vector<Advert>& adverts, const void* body,
                 size_t body_bytes);

}  // namespace geops::rdma
