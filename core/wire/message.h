// Message: one header plus data segments, the unit every transport moves.
//
// Data messages carry keys in segment 0 and either no value segments (a
// pull request) or exactly one value segment per key. Keeping one segment
// per key lets a server answer with views of its own result buffers and a
// worker push views of its own tensor: no side concatenates.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/base/buffer.h"
#include "core/base/dtype.h"

namespace geops {

using Key = uint64_t;

enum class Command : uint16_t {
  // Membership (scheduler <-> node).
  kRegister = 1,
  kNodeTable = 2,
  kBarrier = 3,
  kBarrierDone = 4,
  kHeartbeat = 5,
  kHeartbeatAck = 6,
  kExit = 7,        // node -> scheduler: I am done with this tier
  kTerminate = 8,   // scheduler -> server: every worker is done, finish up
  kAbort = 9,       // anyone -> scheduler -> everyone: stop with an error
  kShutdown = 10,   // scheduler -> node: everyone has exited, you may go
  kRegisterAck = 11,  // scheduler -> registering node: I have you, wait for the table
  // Key-value traffic.
  kData = 32,
  kSetRule = 33,    // master worker -> global servers: update rule
  // worker -> its servers: their transport counters (a text of key=value
  // pairs), so a benchmark measures what crossed each link per round.
  kStats = 34,
  // party server -> global servers: the rule and the WAN policy the master
  // worker set (a RuleSpec body).
  kGetRule = 35,
};
bool IsKnownCommand(uint16_t c);
const char* CommandName(Command c);


// Bits of Header::flags.
namespace msgflag {
inline constexpr uint32_t kRequest = 1u << 0;   // clear on responses
inline constexpr uint32_t kPush = 1u << 1;      // carries values to add
inline constexpr uint32_t kPull = 1u << 2;      // wants values back
inline constexpr uint32_t kInit = 1u << 3;      // values are initial parameters
inline constexpr uint32_t kError = 1u << 4;     // response: segment 0 is the error text
// Every value is the recipient's slice of its key (slice r of n for server
// rank r of n; see SliceRange): a big key spread over all the global servers.
inline constexpr uint32_t kSlice = 1u << 5;
// Every value is a compressed container (core/kv/sparse.h), and so is every
// value of the answer: the WAN tier's top-k.
inline constexpr uint32_t kSparse = 1u << 6;
inline constexpr uint32_t kAll = (1u << 7) - 1;
}  // namespace msgflag

struct Header {
  Command command = Command::kData;
  int32_t sender = 0;
  int32_t recipient = 0;
  uint32_t flags = 0;
  int32_t timestamp = 0;   // request id chosen by the requester, echoed back
  uint64_t round = 0;      // synchronous round (version) of a data message
  DType dtype = DType::kNone;
  uint32_t key_count = 0;
};

struct Message {
  Header header;
  std::vector<Buffer> segments;
  // Not on the wire: the receiving transport's token for the connection the
  // message came in on (0: unknown). A tier binds each node id to one
  // connection and drops messages that claim the id from another.
  uint64_t origin = 0;

  // Whether segment `i` holds values: what the zero-copy promise is about,
  // so a transport counts its copies of it (TransportStats::bytes_copied)
  // without knowing the command set.
  bool IsValueSegment(size_t i) const { return header.command == Command::kData && i >= 1; }

  size_t payload_bytes() const {
    size_t n = 0;
    for (const auto& s : segments) n += s.size();
    return n;
  }
  std::string DebugString() const;
};

}  // namespace geops
