// Helpers for tests that run whole geops clusters as real processes.
#pragma once

#include <unistd.h>

#include <catch2/catch.hpp>
#include <iostream>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "deploy/launcher.h"

namespace geops::testing {

using namespace geops::deploy;

inline std::string TempDir() {
  char tmpl[] = "/tmp/geops-test.XXXXXX";
  REQUIRE(mkdtemp(tmpl) != nullptr);
  return tmpl;
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// The logs of every process that failed, on stderr (ctest shows them with
// --output-on-failure): why a cluster test failed is in there.
inline void DumpFailures(const std::vector<ProcessResult>& results) {
  for (const auto& r : results) {
    if (r.exit_code == 0) continue;
    std::cerr << "---- " << r.name << " exit=" << r.exit_code << " signal=" << r.signal << "\n"
              << ReadFile(r.stderr_path);
  }
}

inline uint64_t Elements(const std::string& sizes) {
  uint64_t n = 0;
  for (absl::string_view s : absl::StrSplit(sizes, ',')) n += std::stoull(std::string(s));
  return n;
}

struct Outcome {
  std::vector<ProcessResult> results;
  RunSummary summary;
};

inline Outcome Run(const std::vector<ProcessSpec>& specs, absl::Duration timeout = absl::Seconds(240)) {
  RunOptions o;
  o.binary = GEOPS_BINARY;
  o.log_dir = TempDir();
  o.timeout = timeout;
  Cluster c(o);
  REQUIRE(c.Start(specs).ok());
  Outcome out;
  out.results = c.Wait();
  out.summary = Summarize(out.results);
  return out;
}

// Runs `t`, requires every process to exit 0 and every trainer to have
// checked every value of every round with no mismatch and one checksum.
// `edit` may adjust the planned processes (addresses, transports) first;
// `zero_copy` requires that no process copied a value in user space.
inline Outcome RunExact(Topology t, int trainers,
                        const std::function<void(std::vector<ProcessSpec>&)>& edit = nullptr,
                        bool zero_copy = true) {
  const int rounds = std::stoi(t.env.at("GEOPS_ROUNDS"));
  const uint64_t elements = Elements(t.env.at("GEOPS_KEY_SIZES"));
  auto plan = Plan(t);
  REQUIRE(plan.ok());
  if (edit) edit(*plan);
  Outcome out = Run(*plan);
  DumpFailures(out.results);
  for (const auto& r : out.results) {
    INFO(r.name);
    REQUIRE(r.signal == 0);
    REQUIRE(r.exit_code == 0);
  }
  REQUIRE(out.summary.workers_reporting == trainers);
  REQUIRE(out.summary.mismatches == 0);
  REQUIRE(out.summary.distinct_checksums == 1);
  // Round 0 (initial values) plus every training round, every element.
  REQUIRE(out.summary.values_checked == uint64_t(trainers) * (rounds + 1) * elements);
  REQUIRE(out.summary.rounds == rounds);
  REQUIRE(out.summary.malformed == 0);
  if (zero_copy) REQUIRE(out.summary.copied_bytes == 0);
  REQUIRE(out.summary.bytes_by_tier["global"] > 0);
  return out;
}

// Starts `plan` with no process stopping the others and returns once
// `watch` has printed "round N/" (the cluster is mid-training).
inline std::unique_ptr<Cluster> StartUntilRound(const std::vector<ProcessSpec>& plan,
                                                const std::string& watch, int round,
                                                absl::Duration timeout = absl::Seconds(90)) {
  RunOptions o;
  o.binary = GEOPS_BINARY;
  o.log_dir = TempDir();
  o.stop_on_failure = false;  // the survivors must stop by themselves
  o.timeout = timeout;
  auto c = std::make_unique<Cluster>(o);
  REQUIRE(c->Start(plan).ok());
  REQUIRE(c->WaitForOutput(watch, absl::StrCat("round ", round, "/"), absl::Seconds(60)));
  return c;
}

inline Topology Base(int rounds, std::string sizes) {
  Topology t;
  t.env["GEOPS_ROUNDS"] = absl::StrCat(rounds);
  t.env["GEOPS_KEY_SIZES"] = sizes;
  t.env["GEOPS_PROGRESS"] = "0";
  t.env["PS_HEARTBEAT_TIMEOUT"] = "30";
  return t;
}


}  // namespace geops::testing
