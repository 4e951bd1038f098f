// What travels in one SEND of the rdma transport, and how a message is cut
// into frames.
//
//   kEager  FrameHeader + the flat message (header, then segments). A
//           message that fits a receive slot, in one SEND.
//   kRts    FrameHeader{id} + the encoded wire header. The sender asks for
//           targets for the message's segments.
//   kCts    FrameHeader{id, count} + `count` CtsTargets: where each segment
//           must be written, and the receiver's token for the message.
//           The sender then RDMA_WRITEs every segment from registered
//           memory, the last write carrying the token as immediate data,
//           which completes the message at the receiver (RC delivers it
//           after every write before it).
//
// The frame says nothing of what a message means: which segments may land
// where is decided by ExpectInto, by (peer, timestamp).
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "absl/status/statusor.h"
#include "core/base/buffer.h"

namespace geops::rdma {

enum FrameType : uint32_t { kEager = 1, kRts = 2, kCts = 3 };

struct FrameHeader {
  uint32_t type;   // FrameType
  uint32_t count;  // kCts: number of CtsTargets that follow
  uint64_t id;     // kRts / kCts: the sender's rendezvous id
};

struct CtsTarget {
  uint64_t addr;
  uint32_t rkey;
  uint32_t token;  // the receiver's id for this message (same in every entry)
};
static_assert(sizeof(FrameHeader) == 16 && sizeof(CtsTarget) == 16);

// wr_id of a receive: the slot index with this bit set (sends carry a
// sequence number, which never reaches it).
constexpr uint64_t kRecvFlag = uint64_t{1} << 63;

// The frame header of a received SEND and what follows it; an error for a
// frame too short to have one.
struct ParsedFrame {
  FrameHeader header;
  Buffer body;
};
absl::StatusOr<ParsedFrame> ParseFrame(const Buffer& slot);

// A control frame: `header` and then `body_bytes` of `body`.
Buffer MakeFrame(FrameHeader header, const void* body, size_t body_bytes);

}  // namespace geops::rdma
