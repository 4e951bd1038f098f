// The wire codec: a fixed, versioned little-endian header followed by the
// lengths of the data segments. Decoding trusts nothing: every length, enum
// and count is checked against the bytes actually received.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "core/base/buffer.h"
#include "core/wire/message.h"

namespace geops::wire {

inline constexpr uint32_t kMagic = 0x50454f47;  // "GOEP" read little-endian
inline constexpr uint16_t kVersion = 1;
inline constexpr size_t kFixedHeaderBytes = 48;
inline constexpr uint32_t kMaxKeysPerMessage = 1u << 20;
inline constexpr uint32_t kMaxSegments = kMaxKeysPerMessage + 1;
inline constexpr uint64_t kMaxSegmentBytes = uint64_t{1} << 34;  // 16 GiB

// Header bytes for `msg`, including the segment length table.
Buffer EncodeHeader(const Message& msg);
// The same bytes written into `out` (EncodedHeaderSize(segments) long), for
// transports that build a whole frame in memory they already own.
void EncodeHeaderInto(const Message& msg, std::byte* out);
size_t EncodedHeaderSize(size_t segment_count);

// Decodes a header whose segments arrived as separate frames (ZeroMQ
// multipart). The segments are adopted without copying.
absl::StatusOr<Message> Decode(std::span<const std::byte> header, std::vector<Buffer> segments);

// Validates a header on its own and returns it with its segment lengths
// (a transport that moves segments itself needs their sizes first).
struct HeaderInfo {
  Header header;
  std::vector<uint64_t> lengths;
};
absl::StatusOr<HeaderInfo> DecodeHeader(std::span<const std::byte> header);

// Decodes header and segments laid out back to back in one buffer; the
// segments become slices of `frame`.
absl::StatusOr<Message> DecodeFlat(const Buffer& frame);
// The inverse of DecodeFlat (copies; used for small control messages).
Buffer EncodeFlat(const Message& msg);

}  // namespace geops::wire
