#include "core/wire/codec.h"

#include <bit>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"

namespace geops {

bool IsKnownCommand(uint16_t c) {
  return (c >= static_cast<uint16_t>(Command::kRegister) &&
          c <= static_cast<uint16_t>(Command::kRegisterAck)) ||
         c == static_cast<uint16_t>(Command::kData) ||
         c == static_cast<uint16_t>(Command::kSetRule) ||
         c == static_cast<uint16_t>(Command::kStats) ||
         c == static_cast<uint16_t>(Command::kGetRule);
}

const char* CommandName(Command c) {
  switch (c) {
    case Command::kRegister: return "REGISTER";
    case Command::kNodeTable: return "NODE_TABLE";
    case Command::kBarrier: return "BARRIER";
    case Command::kBarrierDone: return "BARRIER_DONE";
    case Command::kHeartbeat: return "HEARTBEAT";
    case Command::kHeartbeatAck: return "HEARTBEAT_ACK";
    case Command::kExit: return "EXIT";
    case Command::kTerminate: return "TERMINATE";
    case Command::kAbort: return "ABORT";
    case Command::kShutdown: return "SHUTDOWN";
    case Command::kRegisterAck: return "REGISTER_ACK";
    case Command::kData: return "DATA";
    case Command::kSetRule: return "SET_RULE";
    case Command::kStats: return "STATS";
    case Command::kGetRule: return "GET_RULE";
  }
  return "?";
}

std::string Message::DebugString() const {
  const Header& h = header;
  std::string flags;
  if (h.flags & msgflag::kRequest) flags += "req,";
  if (h.flags & msgflag::kPush) flags += "push,";
  if (h.flags & msgflag::kPull) flags += "pull,";
  if (h.flags & msgflag::kInit) flags += "init,";
  if (h.flags & msgflag::kError) flags += "error,";
  if (h.flags & msgflag::kSlice) flags += "slice,";
  if (h.flags & msgflag::kSparse) flags += "sparse,";
  if (!flags.empty()) flags.pop_back();
  return absl::StrFormat("%s %d->%d ts=%d round=%d flags=[%s] keys=%d dtype=%s bytes=%d",
                         CommandName(h.command), h.sender, h.recipient, h.timestamp, h.round,
                         flags, h.key_count, DTypeName(h.dtype), payload_bytes());
}

namespace wire {
namespace {

// The wire is little-endian; so is every host geops builds for (x86-64,
// aarch64), which lets fields be copied as they are.
static_assert(std::endian::native == std::endian::little, "geops needs a little-endian host");

template <typename T>
void Put(std::byte* at, T v) {
  std::memcpy(at, &v, sizeof(T));
}
template <typename T>
T Get(const std::byte* at) {
  T v;
  std::memcpy(&v, at, sizeof(T));
  return v;
}

absl::Status Malformed(const std::string& why) {
  return absl::DataLossError("malformed message: " + why);
}

// Checks that apply once the segments are known: shape of data messages.
absl::Status CheckShape(const Message& m) {
  const Header& h = m.header;
  size_t nseg = m.segments.size();
  if (h.command != Command::kData) {
    if (h.key_count != 0) return Malformed("control message with keys");
    if (nseg > 1) return Malformed("control message with more than one segment");
    return absl::OkStatus();
  }
  if (h.flags & msgflag::kError) {
    if (h.flags & msgflag::kRequest) return Malformed("an error flag on a request");
    if (h.key_count != 0) return Malformed("an error response with keys");
    if (nseg != 1) return Malformed("error response without exactly one text segment");
    return absl::OkStatus();
  }
  if (h.key_count == 0) return Malformed("data message without keys");
  if (h.key_count > kMaxKeysPerMessage) return Malformed("too many keys");
  if (nseg == 0) return Malformed("data message without a key segment");
  if (m.segments[0].size() != uint64_t{h.key_count} * sizeof(Key)) {
    return Malformed(absl::StrFormat("key segment is %d bytes for %d keys",
                                     m.segments[0].size(), h.key_count));
  }
  if (nseg != 1 && nseg != h.key_count + 1) {
    return Malformed(absl::StrFormat("%d value segments for %d keys", nseg - 1, h.key_count));
  }
  if (nseg > 1) {
    if (h.dtype == DType::kNone) return Malformed("values without a dtype");
    // A compressed container (kSparse) has a layout of its own, which its
    // decoder checks (core/kv/sparse.h).
    size_t width = (h.flags & msgflag::kSparse) ? 1 : DTypeSize(h.dtype);
    for (size_t i = 1; i < nseg; ++i) {
      if (m.segments[i].size() % width != 0) {
        return Malformed(absl::StrFormat("value segment of %d bytes is not a whole number of %s",
                                         m.segments[i].size(), DTypeName(h.dtype)));
      }
    }
  }
  return absl::OkStatus();
}

using Parsed = HeaderInfo;

absl::StatusOr<Parsed> ParseHeader(std::span<const std::byte> b) {
  if (b.size() < kFixedHeaderBytes) {
    return Malformed(absl::StrFormat("header of %d bytes, need at least %d", b.size(),
                                     kFixedHeaderBytes));
  }
  const std::byte* p = b.data();
  if (Get<uint32_t>(p) != kMagic) return Malformed("bad magic");
  if (uint16_t v = Get<uint16_t>(p + 4); v != kVersion) {
    return Malformed(absl::StrFormat("wire version %d, this build speaks %d", v, kVersion));
  }
  uint16_t cmd = Get<uint16_t>(p + 6);
  if (!IsKnownCommand(cmd)) return Malformed(absl::StrFormat("unknown command %d", cmd));
  Parsed out;
  Header& h = out.header;
  h.command = static_cast<Command>(cmd);
  h.sender = Get<int32_t>(p + 8);
  h.recipient = Get<int32_t>(p + 12);
  h.flags = Get<uint32_t>(p + 16);
  if (h.flags & ~msgflag::kAll) return Malformed(absl::StrFormat("unknown flags 0x%x", h.flags));
  h.timestamp = Get<int32_t>(p + 20);
  h.round = Get<uint64_t>(p + 24);
  uint8_t dtype = Get<uint8_t>(p + 32);
  if (!IsKnownDType(dtype)) return Malformed(absl::StrFormat("unknown dtype %d", dtype));
  h.dtype = static_cast<DType>(dtype);
  h.key_count = Get<uint32_t>(p + 36);
  uint32_t nseg = Get<uint32_t>(p + 40);
  if (nseg > kMaxSegments) return Malformed(absl::StrFormat("%d segments", nseg));
  if (b.size() != EncodedHeaderSize(nseg)) {
    return Malformed(absl::StrFormat("header of %d bytes for %d segments, expected %d", b.size(),
                                     nseg, EncodedHeaderSize(nseg)));
  }
  out.lengths.resize(nseg);
  for (uint32_t i = 0; i < nseg; ++i) {
    out.lengths[i] = Get<uint64_t>(p + kFixedHeaderBytes + 8 * i);
    if (out.lengths[i] > kMaxSegmentBytes) return Malformed("segment too large");
  }
  return out;
}

}  // namespace

absl::StatusOr<HeaderInfo> DecodeHeader(std::span<const std::byte> header) {
  return ParseHeader(header);
}

size_t EncodedHeaderSize(size_t segment_count) { return kFixedHeaderBytes + 8 * segment_count; }

void EncodeHeaderInto(const Message& msg, std::byte* p) {
  const Header& h = msg.header;
  std::memset(p, 0, kFixedHeaderBytes);
  Put<uint32_t>(p, kMagic);
  Put<uint16_t>(p + 4, kVersion);
  Put<uint16_t>(p + 6, static_cast<uint16_t>(h.command));
  Put<int32_t>(p + 8, h.sender);
  Put<int32_t>(p + 12, h.recipient);
  Put<uint32_t>(p + 16, h.flags);
  Put<int32_t>(p + 20, h.timestamp);
  Put<uint64_t>(p + 24, h.round);
  Put<uint8_t>(p + 32, static_cast<uint8_t>(h.dtype));
  Put<uint32_t>(p + 36, h.key_count);
  Put<uint32_t>(p + 40, static_cast<uint32_t>(msg.segments.size()));
  for (size_t i = 0; i < msg.segments.size(); ++i) {
    Put<uint64_t>(p + kFixedHeaderBytes + 8 * i, msg.segments[i].size());
  }
}

Buffer EncodeHeader(const Message& msg) {
  Buffer b = Buffer::Allocate(EncodedHeaderSize(msg.segments.size()));
  EncodeHeaderInto(msg, b.data());
  return b;
}

absl::StatusOr<Message> Decode(std::span<const std::byte> header, std::vector<Buffer> segments) {
  auto parsed = ParseHeader(header);
  if (!parsed.ok()) return parsed.status();
  if (segments.size() != parsed->lengths.size()) {
    return Malformed(absl::StrFormat("header announces %d segments, %d arrived",
                                     parsed->lengths.size(), segments.size()));
  }
  for (size_t i = 0; i < segments.size(); ++i) {
    if (segments[i].size() != parsed->lengths[i]) {
      return Malformed(absl::StrFormat("segment %d is %d bytes, header says %d", i,
                                       segments[i].size(), parsed->lengths[i]));
    }
  }
  Message m{parsed->header, std::move(segments)};
  if (auto s = CheckShape(m); !s.ok()) return s;
  return m;
}

absl::StatusOr<Message> DecodeFlat(const Buffer& frame) {
  std::span<const std::byte> all(frame.data(), frame.size());
  if (all.size() < kFixedHeaderBytes) return ParseHeader(all).status();
  uint32_t nseg = Get<uint32_t>(all.data() + 40);
  if (nseg > kMaxSegments) return Malformed(absl::StrFormat("%d segments", nseg));
  size_t hsize = EncodedHeaderSize(nseg);
  if (all.size() < hsize) return Malformed("truncated segment table");
  auto parsed = ParseHeader(all.first(hsize));
  if (!parsed.ok()) return parsed.status();
  uint64_t remaining = all.size() - hsize;
  Message m{parsed->header, {}};
  m.segments.reserve(nseg);
  uint64_t offset = hsize;
  for (uint64_t len : parsed->lengths) {
    if (len > remaining) return Malformed("segment runs past the end of the frame");
    m.segments.push_back(frame.Slice(offset, len));
    offset += len;
    remaining -= len;
  }
  if (remaining != 0) return Malformed(absl::StrFormat("%d trailing bytes", remaining));
  if (auto s = CheckShape(m); !s.ok()) return s;
  return m;
}

Buffer EncodeFlat(const Message& msg) {
  Buffer header = EncodeHeader(msg);
  Buffer out = Buffer::Allocate(header.size() + msg.payload_bytes());
  std::memcpy(out.data(), header.data(), header.size());
  size_t off = header.size();
  for (const auto& s : msg.segments) {
    if (s.size()) std::memcpy(out.data() + off, s.data(), s.size());
    off += s.size();
  }
  return out;
}

}  // namespace wire
}  // namespace geops
