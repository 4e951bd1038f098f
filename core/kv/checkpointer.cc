#include "core/kv/checkpointer.h"

#include <dirent.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <set>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "core/base/log.h"

namespace geops {
namespace {

// "server-R-of-N.SEQUENCE.rROUND.ckpt" -> (R, N, SEQUENCE, ROUND).
bool ParseName(const std::string& name, uint32_t* rank, uint32_t* of, uint64_t* seq,
               uint64_t* round) {
  unsigned r = 0, n = 0;
  unsigned long long s = 0, rd = 0;
  int used = 0;
  if (std::sscanf(name.c_str(), "server-%u-of-%u.%llu.r%llu.ckpt%n", &r, &n, &s, &rd, &used) != 4) {
    return false;
  }
  if (static_cast<size_t>(used) != name.size()) return false;
  *rank = r;
  *of = n;
  *seq = s;
  *round = rd;
  return true;
}

double MBps(uint64_t bytes, absl::Duration d) {
  double s = absl::ToDoubleSeconds(d);
  return s > 0 ? static_cast<double>(bytes) / 1e6 / s : 0;
}

}  // namespace

Checkpointer::Checkpointer(CheckpointOptions options, uint32_t rank, uint32_t num_servers,
                           Snapshot snapshot)
    : options_(std::move(options)),
      rank_(rank),
      num_servers_(num_servers),
      snapshot_(std::move(snapshot)) {
  due_ = options_.every_rounds;
}

Checkpointer::~Checkpointer() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (writer_.joinable()) writer_.join();
}

std::string Checkpointer::PathOf(uint32_t rank, uint64_t sequence, uint64_t round) const {
  return absl::StrFormat("%s/server-%d-of-%d.%08d.r%d.ckpt", options_.dir, rank, num_servers_,
                         sequence, round);
}

absl::StatusOr<Checkpointer::Files> Checkpointer::List() const {
  DIR* d = ::opendir(options_.dir.c_str());
  if (d == nullptr) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "GEOPS_CHECKPOINT_DIR=\"%s\": cannot read it: %s", options_.dir, std::strerror(errno)));
  }
  Files mine;
  std::set<uint32_t> other_sizes;
  while (dirent* e = ::readdir(d)) {
    uint32_t r = 0, n = 0;
    uint64_t s = 0, round = 0;
    if (!ParseName(e->d_name, &r, &n, &s, &round)) continue;
    if (n != num_servers_) {
      other_sizes.insert(n);
      continue;
    }
    mine[r][s] = {absl::StrCat(options_.dir, "/", e->d_name), round};
  }
  ::closedir(d);
  if (mine.empty() && !other_sizes.empty()) {
    // Resuming with another number of servers would give each a key range
    // it never held: refuse rather than start a fresh model silently.
    return absl::FailedPreconditionError(absl::StrFormat(
        "GEOPS_CHECKPOINT_DIR=\"%s\" holds checkpoints of a tier of %d servers, but this tier "
        "has %d: start with the same number of servers (DMLC_NUM_SERVER / "
        "DMLC_NUM_GLOBAL_SERVER), or point GEOPS_CHECKPOINT_DIR elsewhere to start afresh",
        options_.dir, *other_sizes.begin(), num_servers_));
  }
  return mine;
}

absl::StatusOr<std::optional<CheckpointImage>> Checkpointer::LoadLatest() {
  auto files = List();
  if (!files.ok()) return files.status();
  auto own = files->find(rank_);
  if (own == files->end() || own->second.empty()) {
    if (!files->empty()) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "GEOPS_CHECKPOINT_DIR=\"%s\" holds checkpoints of other servers of this tier but none "
          "of server %d: its part of the model is missing",
          options_.dir, rank_));
    }
    return std::optional<CheckpointImage>();
  }
  // With every server's files here, the newest cut (by round: a server
  // killed mid-run may have written one checkpoint fewer, so sequences
  // differ) that all of them wrote.
  uint64_t pick = own->second.rbegin()->first;
  if (files->size() == num_servers_) {
    std::optional<uint64_t> common;
    for (auto it = own->second.rbegin(); it != own->second.rend() && !common; ++it) {
      bool everyone = true;
      for (const auto& [r, seqs] : *files) {
        bool has = false;
        for (const auto& [seq, f] : seqs) has |= f.round == it->second.round;
        everyone &= has;
      }
      if (everyone) common = it->first;
    }
    if (common) {
      pick = *common;
    } else {
      log::Warn("checkpoint: the servers of this tier have no checkpoint in common in %s; "
                "server %d resumes from its newest, the others from theirs",
                options_.dir, rank_);
    }
  }
  const std::string& path = own->second.at(pick).path;
  absl::Time t0 = absl::Now();
  auto img = ReadCheckpointFile(path);
  if (!img.ok()) return img.status();
  if (img->server_rank != rank_ || img->num_servers != num_servers_) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "checkpoint %s was written by server %d of %d, not by this server (%d of %d): files "
        "were moved or renamed",
        path, img->server_rank, img->num_servers, rank_, num_servers_));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    next_sequence_ = own->second.rbegin()->first + 1;
  }
  base_round_ = img->round;
  const absl::Duration took = absl::Now() - t0;
  log::Info("checkpoint: server %d of %d resumes from %s (round %d, %d keys, %.1f MB, read in "
            "%s, %.0f MB/s)",
            rank_, num_servers_, path, img->round, img->entries.size(),
            static_cast<double>(img->value_bytes()) / 1e6, absl::FormatDuration(took),
            MBps(img->value_bytes(), took));
  return std::optional<CheckpointImage>(std::move(*img));
}

void Checkpointer::Start() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    last_written_ = absl::Now();
  }
  writer_ = std::thread([this] { WriterLoop(); });
}

bool Checkpointer::RoundClosed(uint64_t key, bool slice, uint64_t round) {
  if (options_.every_rounds == 0) return false;
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t& latest = key_round_[{key, slice}];
  const uint64_t before = latest;
  latest = std::max(latest, round);
  if (before < due_ && latest >= due_) ++reached_;
  if (reached_ < key_round_.size()) return false;
  // Every key has closed the cut: the next one is the first multiple of
  // the cadence past the slowest key.
  uint64_t slowest = UINT64_MAX;
  for (const auto& [k, r] : key_round_) slowest = std::min(slowest, r);
  due_ = (slowest / options_.every_rounds + 1) * options_.every_rounds;
  reached_ = 0;
  for (const auto& [k, r] : key_round_) reached_ += r >= due_;
  return true;
}

void Checkpointer::Submit(CheckpointImage image, absl::Duration pause) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (waiting_) ++stats_.replaced;
    waiting_.emplace(std::move(image), pause);
  }
  cv_.notify_all();
}

void Checkpointer::WriterLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  const bool timed = options_.every > absl::ZeroDuration();
  while (true) {
    if (waiting_) {
      auto [image, pause] = std::move(*waiting_);
      waiting_.reset();
      lock.unlock();
      (void)WriteOne(std::move(image), pause);
      lock.lock();
      continue;
    }
    if (stop_) return;
    if (timed && absl::Now() - last_written_ >= options_.every) {
      lock.unlock();
      absl::Time t0 = absl::Now();
      CheckpointImage image = snapshot_();
      absl::Duration pause = absl::Now() - t0;
      (void)WriteOne(std::move(image), pause);
      lock.lock();
      continue;
    }
    // Wake for a submitted image, the timer, or the end.
    cv_.wait_for(lock, std::chrono::milliseconds(timed ? 100 : 1000));
  }
}

absl::Status Checkpointer::WriteOne(CheckpointImage image, absl::Duration pause) {
  std::lock_guard<std::mutex> one(write_mu_);
  uint64_t seq;
  {
    std::lock_guard<std::mutex> lock(mu_);
    seq = next_sequence_++;
  }
  image.server_rank = rank_;
  image.num_servers = num_servers_;
  image.sequence = seq;
  image.round += base_round_;
  image.written = absl::Now();
  const std::string path = PathOf(rank_, seq, image.round);
  absl::Time t0 = absl::Now();
  auto bytes = WriteCheckpointFile(path, image);
  const absl::Duration took = absl::Now() - t0;
  std::lock_guard<std::mutex> lock(mu_);
  last_written_ = absl::Now();
  if (!bytes.ok()) {
    ++stats_.failed;
    log::Error("checkpoint %d not written: %s", seq, bytes.status().message());
    return bytes.status();
  }
  ++stats_.written;
  stats_.bytes = *bytes;
  stats_.last_write = took;
  stats_.max_pause = std::max(stats_.max_pause, pause);
  log::Info("checkpoint %d: round %d, %d keys, %.1f MB to %s in %s (%.0f MB/s); the round waited "
            "%s for the snapshot",
            seq, image.round, image.entries.size(), static_cast<double>(*bytes) / 1e6, path,
            absl::FormatDuration(took), MBps(*bytes, took), absl::FormatDuration(pause));
  Prune();
  return absl::OkStatus();
}

void Checkpointer::Prune() {
  auto files = List();
  if (!files.ok()) return;
  auto own = files->find(rank_);
  if (own == files->end()) return;
  int excess = static_cast<int>(own->second.size()) - std::max(1, options_.keep);
  for (auto it = own->second.begin(); excess > 0 && it != own->second.end(); ++it, --excess) {
    if (::unlink(it->second.path.c_str()) != 0) {
      log::Warn("checkpoint: cannot remove %s: %s", it->second.path, std::strerror(errno));
    }
  }
}

absl::Status Checkpointer::Final() {
  absl::Time t0 = absl::Now();
  CheckpointImage image = snapshot_();
  absl::Duration pause = absl::Now() - t0;
  {
    // An image still waiting is older than this one.
    std::lock_guard<std::mutex> lock(mu_);
    if (waiting_) ++stats_.replaced;
    waiting_.reset();
  }
  return WriteOne(std::move(image), pause);
}

CheckpointStats Checkpointer::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

}  // namespace geops
