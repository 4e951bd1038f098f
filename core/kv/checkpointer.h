// Checkpointer: when a top server writes its state (GEOPS_CHECKPOINT_*),
// where the files go, which one a restarted server resumes from, and what
// it cost.
//
// Checkpoints are cut at round boundaries (every key has closed round N,
// 2N, ...; GEOPS_CHECKPOINT_ROUNDS) or on a timer (GEOPS_CHECKPOINT_SECONDS),
// and once more when the server ends in order. Taking one costs the round
// in flight only the snapshot: the published values are immutable Buffers,
// so the image holds references, not copies, and a thread of its own writes
// it (checkpoint_file.h) while aggregation goes on. When the disk is slower
// than the cadence the newest image replaces one still waiting.
//
// Files: DIR/server-R-of-N.SEQUENCE.rROUND.ckpt, the newest `keep` of each
// server. A restarted server (same rank, same number of servers) resumes
// from its newest; when the directory is shared by every server of the
// tier, from its newest whose round every server has a file of, so that
// the model's parts come from the same cut.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/kv/checkpoint_file.h"

namespace geops {

struct CheckpointOptions {
  std::string dir;                              // empty: no checkpoints
  uint64_t every_rounds = 0;                    // 0: not by rounds
  absl::Duration every = absl::ZeroDuration();  // zero: not by time
  int keep = 3;                                 // files kept per server
};

struct CheckpointStats {
  uint64_t written = 0;         // checkpoints on disk
  uint64_t replaced = 0;        // images dropped for a newer one before written
  uint64_t failed = 0;          // writes that failed (logged)
  uint64_t bytes = 0;           // of the last file
  absl::Duration max_pause;     // longest snapshot, taken with the round held
  absl::Duration last_write;    // write + fsync + rename of the last file
};

class Checkpointer {
 public:
  // Builds an image of the server's state, taking the lock it needs; the
  // timer and Final() call it, never with this object's lock held.
  using Snapshot = std::function<CheckpointImage()>;

  Checkpointer(CheckpointOptions options, uint32_t rank, uint32_t num_servers, Snapshot snapshot);
  // Stops the writer; an image still waiting is written first.
  ~Checkpointer();
  Checkpointer(const Checkpointer&) = delete;
  Checkpointer& operator=(const Checkpointer&) = delete;

  // The image this server resumes from, nullopt when the directory holds
  // none of this tier's. Errors: a torn or foreign newest file, files of a
  // tier with another number of servers, an unreadable directory.
  absl::StatusOr<std::optional<CheckpointImage>> LoadLatest();

  // Starts the writer (and timer) thread; after LoadLatest.
  void Start();

  // Called, with the caller's aggregation lock held, whenever `key` closes
  // `round`. True when every key seen so far has reached the next cut: the
  // caller then takes the image (it holds the lock) and calls Submit.
  bool RoundClosed(uint64_t key, bool slice, uint64_t round);
  // Queues `image`, taken in `pause`, for the writer.
  void Submit(CheckpointImage image, absl::Duration pause);

  // A last checkpoint of the state as it is, written before returning.
  absl::Status Final();

  CheckpointStats stats() const;
  // Rounds of the resumed image, added to this run's rounds in file headers.
  uint64_t base_round() const { return base_round_; }

 private:
  std::string PathOf(uint32_t rank, uint64_t sequence, uint64_t round) const;
  struct File {
    std::string path;
    uint64_t round = 0;  // the cut's, from the name (the header has it too)
  };
  // This tier's files in the directory: rank -> sequence (ascending) -> file.
  using Files = std::map<uint32_t, std::map<uint64_t, File>>;
  absl::StatusOr<Files> List() const;
  void WriterLoop();
  // Writes one image (numbered here); logs its cost.
  absl::Status WriteOne(CheckpointImage image, absl::Duration pause);
  void Prune();

  const CheckpointOptions options_;
  const uint32_t rank_;
  const uint32_t num_servers_;
  const Snapshot snapshot_;
  uint64_t base_round_ = 0;  // set by LoadLatest, before Start

  mutable std::mutex mu_;
  std::condition_variable cv_;
  // Guarded by mu_.
  uint64_t next_sequence_ = 1;
  std::map<std::pair<uint64_t, bool>, uint64_t> key_round_;  // latest closed round per key
  uint64_t due_ = 0;      // the next cut (rounds cadence)
  size_t reached_ = 0;    // keys at or past due_
  std::optional<std::pair<CheckpointImage, absl::Duration>> waiting_;
  bool writing_ = false;
  bool stop_ = false;
  absl::Time last_written_;
  CheckpointStats stats_;
  std::mutex write_mu_;  // one write at a time (writer thread or Final)
  std::thread writer_;
};

}  // namespace geops
