// The result lines geops processes print on stdout, one definition each:
// the process that prints a line and geops-launch, which parses and adds
// them up, share these structs, so a field renamed on one side cannot go
// silently missing on the other. Each line is `TAG key=value ...`.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace geops::report {

// Every process, once per tier it belonged to (PrintTierStats, stats_line.h).
struct TierStats {
  static constexpr std::string_view kTag = "geops-stats";
  std::string role;  // Config::Describe()
  std::string tier;  // "local" or "global"
  int id = 0;
  uint64_t sent_bytes = 0, recv_bytes = 0, sent_msgs = 0, recv_msgs = 0;
  uint64_t malformed = 0, copied_bytes = 0, staged_bytes = 0, registrations = 0, rejected = 0;
  uint64_t max_rss_kb = 0;
  std::string Format() const;
  static std::optional<TierStats> Parse(std::string_view line);
};

// The built-in checking trainer of the geops executable, at its end.
struct Worker {
  static constexpr std::string_view kTag = "geops-worker";
  int rank = 0;
  bool master = false;
  bool trained = false;  // ran and checked every round
  bool counted = false;  // its pushes were part of the sums
  int rounds = 0;
  uint64_t keys = 0, values_checked = 0, mismatches = 0;
  uint64_t checksum = 0;  // of every value it pulled last
  uint64_t push_bytes = 0;
  double seconds = 0;
  uint64_t copied_bytes = 0;
  uint64_t later_results = 0;  // a non-counting worker answered with a later round
  int resumed_from = 0;        // the checkpoint's round the run continued from
  uint64_t init_bytes = 0;     // a master worker that does not train: what it pushed
  std::string Format() const;
  static std::optional<Worker> Parse(std::string_view line);
};

// The example trainer (GEOPS_TRAIN), at its end.
struct Learner {
  static constexpr std::string_view kTag = "geops-train-worker";
  int shard = 0, shards = 1;
  int epochs = 0, steps_per_epoch = 0, rounds = 0;
  std::optional<double> test_accuracy;  // shard 0 only
  double seconds = 0;
  std::string Format() const;
  static std::optional<Learner> Parse(std::string_view line);
};

}  // namespace geops::report
