// A top server's durable state as one file: what it needs to go on after a
// restart (every key's latest value and round, whole keys and slices, and
// the update rule with its WAN policy), written so that a reader either
// gets all of it or a clear error, never part of it.
//
// Layout (little-endian):
//   "GEOPSCKP" | u32 version (1) | u32 server rank | u32 servers in the tier
//   | u64 round (the cut: see CheckpointImage) | u64 sequence | i64 unix ns
//   | u32 rule bytes | rule (EncodeRule) | u64 entries
//   | entries: u64 key | u8 slice | u8 dtype | u16 0 | u32 0 | u64 round
//              | u64 bytes | bytes
//   | u32 CRC-32C of everything before | "GEOPSEND"
// The file is written under a temporary name, fsynced, renamed over its
// final name and the directory fsynced: a crash leaves the old file or the
// new one. A torn, truncated or altered file fails the CRC or the framing
// and is refused as a whole.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/base/buffer.h"
#include "core/base/dtype.h"
#include "core/wire/message.h"

namespace geops {

struct CheckpointEntry {
  Key key = 0;
  bool slice = false;  // a global server's slice of a big key
  DType dtype = DType::kNone;
  uint64_t round = 0;  // of this value
  Buffer value;
};

struct CheckpointImage {
  uint32_t server_rank = 0;
  uint32_t num_servers = 1;
  // Every key's round is at least this (for a checkpoint taken at a round
  // boundary, every key's round is exactly this in a synchronous job).
  uint64_t round = 0;
  uint64_t sequence = 0;  // counts this server's checkpoints
  absl::Time written;
  Buffer rule;  // EncodeRule; empty: no rule was set
  std::vector<CheckpointEntry> entries;

  uint64_t value_bytes() const;
};

// Writes `image` to `path` atomically (see above). Returns the file's size.
absl::StatusOr<uint64_t> WriteCheckpointFile(const std::string& path, const CheckpointImage& image);

// Reads a whole checkpoint file; DataLoss for a torn or corrupt one,
// InvalidArgument for a file that is not a geops checkpoint (or of a
// version this build cannot read), each naming the file.
absl::StatusOr<CheckpointImage> ReadCheckpointFile(const std::string& path);

// CRC-32C (Castagnoli) of `n` bytes, continuing from `crc` (0 to start).
uint32_t Crc32c(uint32_t crc, const void* data, size_t n);

}  // namespace geops
