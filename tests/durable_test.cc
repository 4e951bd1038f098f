// Durable state: the checkpoint file is all or nothing, the checkpointer
// cuts at round boundaries and picks the cut every server has, and whole
// clusters (real processes) resume from a checkpoint and survive killed
// processes under geops-launch --restart, every result exact.
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "cluster_util.h"
#include "core/base/config.h"
#include "core/kv/checkpoint_file.h"
#include "core/kv/checkpointer.h"
#include "core/wire/control.h"

namespace geops {
namespace {

using testing::TempDir;

CheckpointImage Sample(uint32_t rank = 0, uint32_t servers = 2) {
  CheckpointImage img;
  img.server_rank = rank;
  img.num_servers = servers;
  img.round = 40;
  img.sequence = 3;
  img.written = absl::FromUnixSeconds(1700000000);
  img.rule = EncodeRule(RuleSpec(UpdateRule::kSgd, 0.25, 0));
  for (int k = 0; k < 3; ++k) {
    Buffer v = Buffer::Allocate(4 * (100 + k));
    auto f = v.as<float>();
    for (size_t i = 0; i < f.size(); ++i) f[i] = static_cast<float>(k * 1000 + i) * 0.5f;
    img.entries.push_back({static_cast<Key>(k * 7), k == 2, DType::kFloat32, 40, v});
  }
  return img;
}

std::string Slurp(const std::string& path) { return testing::ReadFile(path); }

// The name a Checkpointer gives server `rank` of `of`'s checkpoint `seq`.
std::string Name(const std::string& dir, int rank, int of, uint64_t seq, uint64_t round) {
  return absl::StrFormat("%s/server-%d-of-%d.%08d.r%d.ckpt", dir, rank, of, seq, round);
}

void Spit(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

TEST_CASE("CRC-32C matches its published check value, in pieces or whole", "[durable]") {
  const std::string nine = "123456789";
  REQUIRE(Crc32c(0, nine.data(), nine.size()) == 0xE3069283u);
  uint32_t c = Crc32c(0, nine.data(), 4);
  REQUIRE(Crc32c(c, nine.data() + 4, 5) == 0xE3069283u);
  std::string zeros(32, '\0');
  REQUIRE(Crc32c(0, zeros.data(), zeros.size()) == 0x8A9136AAu);
}

TEST_CASE("a checkpoint file reads back exactly what was written", "[durable]") {
  const std::string dir = TempDir();
  const std::string path = dir + "/c.ckpt";
  CheckpointImage img = Sample();
  auto bytes = WriteCheckpointFile(path, img);
  REQUIRE(bytes.ok());
  REQUIRE(*bytes == Slurp(path).size());
  REQUIRE(access((path + ".tmp").c_str(), F_OK) != 0);  // renamed, not left behind
  auto back = ReadCheckpointFile(path);
  REQUIRE(back.ok());
  REQUIRE(back->server_rank == 0);
  REQUIRE(back->num_servers == 2);
  REQUIRE(back->round == 40);
  REQUIRE(back->sequence == 3);
  REQUIRE(back->written == img.written);
  auto rule = DecodeRule(back->rule);
  REQUIRE(rule.ok());
  REQUIRE(rule->rule == UpdateRule::kSgd);
  REQUIRE(rule->learning_rate == 0.25);
  REQUIRE(back->entries.size() == 3);
  for (size_t i = 0; i < 3; ++i) {
    const auto& a = img.entries[i];
    const auto& b = back->entries[i];
    REQUIRE(a.key == b.key);
    REQUIRE(a.slice == b.slice);
    REQUIRE(a.dtype == b.dtype);
    REQUIRE(a.round == b.round);
    REQUIRE(a.value.size() == b.value.size());
    REQUIRE(std::memcmp(a.value.data(), b.value.data(), a.value.size()) == 0);
    REQUIRE(b.value.aligned_for<double>());
  }
}

TEST_CASE("a torn, altered or foreign checkpoint is refused whole, naming the file",
          "[durable]") {
  const std::string dir = TempDir();
  const std::string path = dir + "/c.ckpt";
  REQUIRE(WriteCheckpointFile(path, Sample()).ok());
  const std::string good = Slurp(path);
  const std::string bad = dir + "/bad.ckpt";

  // Every length short of the whole file: a crash mid-write (were the
  // rename not there), or a disk that lost the tail.
  for (size_t len = 0; len < good.size(); len += (len < 120 ? 1 : 97)) {
    Spit(bad, good.substr(0, len));
    auto r = ReadCheckpointFile(bad);
    INFO("length " << len);
    REQUIRE(!r.ok());
    REQUIRE(absl::StrContains(r.status().message(), bad));
    if (len >= 12) REQUIRE(r.status().code() == absl::StatusCode::kDataLoss);
  }
  // One flipped bit anywhere after the magic: the CRC or the framing.
  for (size_t at = 8; at < good.size(); at += 13) {
    std::string b = good;
    b[at] = static_cast<char>(b[at] ^ 0x10);
    Spit(bad, b);
    auto r = ReadCheckpointFile(bad);
    INFO("flipped byte " << at);
    REQUIRE(!r.ok());
  }
  // Bytes appended after the end.
  Spit(bad, good + "x");
  REQUIRE(ReadCheckpointFile(bad).status().code() == absl::StatusCode::kDataLoss);
  // Not a checkpoint at all.
  Spit(bad, "#!/bin/sh\necho hello, this is not a checkpoint\n");
  auto foreign = ReadCheckpointFile(bad);
  REQUIRE(foreign.status().code() == absl::StatusCode::kInvalidArgument);
  REQUIRE(absl::StrContains(foreign.status().message(), "not a geops checkpoint"));
  // A later format version.
  std::string v2 = good;
  v2[8] = 2;
  Spit(bad, v2);
  auto later = ReadCheckpointFile(bad);
  REQUIRE(later.status().code() == absl::StatusCode::kInvalidArgument);
  REQUIRE(absl::StrContains(later.status().message(), "version 2"));
}

// A checkpointer whose snapshot is a fixed image, for its cadence and files.
struct Fixture {
  explicit Fixture(CheckpointOptions o, uint32_t rank = 0, uint32_t servers = 1)
      : cp(o, rank, servers, [this] { return image; }) {}
  CheckpointImage image = Sample(0, 1);
  Checkpointer cp;
};

TEST_CASE("checkpoints are cut when every key has closed the next multiple of the cadence",
          "[durable]") {
  CheckpointOptions o;
  o.dir = TempDir();
  o.every_rounds = 5;
  Fixture f(o);
  // Three keys (one of them a slice) step through rounds 1..12 in turn.
  std::vector<uint64_t> cuts;
  for (uint64_t r = 1; r <= 12; ++r) {
    for (int k = 0; k < 3; ++k) {
      if (f.cp.RoundClosed(k, k == 2, r)) cuts.push_back(r * 10 + k);
    }
  }
  // Rounds 5 and 10, each when the last key got there.
  REQUIRE(cuts == std::vector<uint64_t>{52, 102});
  // A key that first appears late joins the cut from then on: while it
  // lags, no cut.
  REQUIRE_FALSE(f.cp.RoundClosed(9, false, 14));
  REQUIRE_FALSE(f.cp.RoundClosed(0, false, 15));
  REQUIRE_FALSE(f.cp.RoundClosed(1, false, 15));
  REQUIRE_FALSE(f.cp.RoundClosed(2, true, 15));
  REQUIRE(f.cp.RoundClosed(9, false, 15));
}

TEST_CASE("a restarted server resumes from the newest cut every server of the tier wrote",
          "[durable]") {
  CheckpointOptions o;
  o.dir = TempDir();
  o.keep = 10;
  auto write = [&](uint32_t rank, uint64_t seq, uint64_t round) {
    CheckpointImage img = Sample(rank, 2);
    img.sequence = seq;
    img.round = round;
    REQUIRE(WriteCheckpointFile(Name(o.dir, rank, 2, seq, round), img).ok());
  };
  // Server 0 wrote cuts 10, 20, 30; server 1, which wrote one more
  // checkpoint earlier on (so its sequences are one ahead), died before 30.
  for (uint64_t s = 1; s <= 3; ++s) write(0, s, s * 10);
  write(1, 1, 5);
  for (uint64_t s = 2; s <= 3; ++s) write(1, s, (s - 1) * 10);
  {
    Checkpointer c(o, 0, 2, [] { return CheckpointImage(); });
    auto img = c.LoadLatest();
    REQUIRE(img.ok());
    REQUIRE(img->has_value());
    REQUIRE((*img)->sequence == 2);
    REQUIRE((*img)->round == 20);
    REQUIRE(c.base_round() == 20);
  }
  {
    Checkpointer c(o, 1, 2, [] { return CheckpointImage(); });
    auto img = c.LoadLatest();
    REQUIRE(img.ok());
    REQUIRE((*img)->sequence == 3);
    REQUIRE((*img)->round == 20);
  }
  // A tier of another size finds files it cannot use and says so.
  {
    Checkpointer c(o, 0, 3, [] { return CheckpointImage(); });
    auto img = c.LoadLatest();
    REQUIRE(img.status().code() == absl::StatusCode::kFailedPrecondition);
    REQUIRE(absl::StrContains(img.status().message(), "tier of 2 servers"));
    REQUIRE(absl::StrContains(img.status().message(), "GEOPS_CHECKPOINT_DIR"));
  }
  // A file renamed to another server's name is caught by its header.
  {
    CheckpointImage wrong = Sample(0, 2);
    wrong.sequence = 9;
    wrong.round = 90;
    REQUIRE(WriteCheckpointFile(Name(o.dir, 1, 2, 9, 90), wrong).ok());
    write(0, 9, 90);
    Checkpointer c(o, 1, 2, [] { return CheckpointImage(); });
    auto img = c.LoadLatest();
    REQUIRE(img.status().code() == absl::StatusCode::kInvalidArgument);
    REQUIRE(absl::StrContains(img.status().message(), "written by server 0 of 2"));
  }
  // An empty directory: nothing to resume, not an error.
  CheckpointOptions fresh;
  fresh.dir = TempDir();
  Checkpointer c(fresh, 0, 1, [] { return CheckpointImage(); });
  auto none = c.LoadLatest();
  REQUIRE(none.ok());
  REQUIRE_FALSE(none->has_value());
}

TEST_CASE("the checkpointer numbers its files after the one it resumed from and keeps the "
          "newest",
          "[durable]") {
  CheckpointOptions o;
  o.dir = TempDir();
  o.keep = 2;
  {
    Fixture f(o);
    REQUIRE(f.cp.LoadLatest().ok());
    f.cp.Start();
    for (int i = 0; i < 4; ++i) REQUIRE(f.cp.Final().ok());
    REQUIRE(f.cp.stats().written == 4);
    REQUIRE(f.cp.stats().bytes > 0);
  }
  auto has = [&](int seq) {
    return access(Name(o.dir, 0, 1, seq, seq <= 4 ? 40 : 80).c_str(), F_OK) == 0;
  };
  REQUIRE(!has(1));
  REQUIRE(!has(2));
  REQUIRE(has(3));
  REQUIRE(has(4));
  Fixture again(o);
  auto img = again.cp.LoadLatest();
  REQUIRE(img.ok());
  REQUIRE((*img)->sequence == 4);
  again.cp.Start();
  REQUIRE(again.cp.Final().ok());
  REQUIRE(has(5));
  // Base round: the resumed image's (40) plus this run's (the fixture's 40).
  auto last = ReadCheckpointFile(Name(o.dir, 0, 1, 5, 80));
  REQUIRE(last.ok());
  REQUIRE(last->round == 80);
}

TEST_CASE("checkpoint variables are checked at start-up, naming the variable", "[durable]") {
  auto parse = [](std::map<std::string, std::string> vars) {
    vars.emplace("DMLC_ROLE", "server");
    vars.emplace("DMLC_PS_ROOT_URI", "127.0.0.1");
    vars.emplace("DMLC_PS_ROOT_PORT", "9000");
    vars.emplace("DMLC_NUM_SERVER", "1");
    vars.emplace("DMLC_NUM_WORKER", "1");
    return ParseConfig([vars](std::string_view n) -> std::optional<std::string> {
      auto it = vars.find(std::string(n));
      if (it == vars.end()) return std::nullopt;
      return it->second;
    });
  };
  auto no_dir = parse({{"GEOPS_CHECKPOINT_ROUNDS", "10"}});
  REQUIRE(!no_dir.ok());
  REQUIRE(absl::StrContains(no_dir.status().message(), "GEOPS_CHECKPOINT_ROUNDS=\"10\""));
  REQUIRE(absl::StrContains(no_dir.status().message(), "GEOPS_CHECKPOINT_DIR"));

  const std::string file = TempDir() + "/a-file";
  Spit(file, "x");
  auto not_dir = parse({{"GEOPS_CHECKPOINT_DIR", file}});
  REQUIRE(!not_dir.ok());
  REQUIRE(absl::StrContains(not_dir.status().message(), "GEOPS_CHECKPOINT_DIR"));

  auto bad_secs = parse({{"GEOPS_CHECKPOINT_DIR", TempDir()}, {"GEOPS_CHECKPOINT_SECONDS", "0"}});
  REQUIRE(!bad_secs.ok());
  REQUIRE(absl::StrContains(bad_secs.status().message(), "GEOPS_CHECKPOINT_SECONDS"));

  const std::string dir = TempDir() + "/made";
  auto ok = parse({{"GEOPS_CHECKPOINT_DIR", dir}});
  REQUIRE(ok.ok());
  REQUIRE(ok->checkpoint_dir == dir);
  REQUIRE(ok->checkpoint_every == defaults::kCheckpointEvery);
  struct stat st {};
  REQUIRE(stat(dir.c_str(), &st) == 0);  // created for the server
}

using namespace geops::deploy;

Topology Shape(int rounds, const std::string& dir) {
  Topology t;
  t.parties = 2;
  t.workers_per_party = 2;
  t.global_servers = 2;
  t.env["GEOPS_ROUNDS"] = absl::StrCat(rounds);
  t.env["GEOPS_KEY_SIZES"] = "3000,5000,20000";
  t.env["GEOPS_RULE"] = "sgd";
  t.env["GEOPS_LR"] = "0.5";
  t.env["GEOPS_CHECKPOINT_DIR"] = dir;
  t.env["PS_HEARTBEAT_TIMEOUT"] = "30";
  return t;
}

// Runs Shape(rounds, dir) to its end; every process must exit 0.
testing::Outcome RunJob(int rounds, const std::string& dir) {
  Topology t = Shape(rounds, dir);
  t.env["GEOPS_PROGRESS"] = "0";
  auto plan = Plan(t);
  REQUIRE(plan.ok());
  auto out = testing::Run(*plan);
  testing::DumpFailures(out.results);
  for (const auto& r : out.results) REQUIRE(r.exit_code == 0);
  REQUIRE(out.summary.mismatches == 0);
  return out;
}

TEST_CASE("a job started on a finished job's checkpoints continues its model exactly",
          "[durable][cluster]") {
  const std::string dir = TempDir() + "/ckpt";
  const int trainers = 4;
  const uint64_t elements = 28000;
  REQUIRE(RunJob(12, dir).summary.resumed_from == 0);
  // The second job runs to round 30: its workers find the model of round
  // 12 and check every value of rounds 12..30 against the exact sums.
  auto out = RunJob(30, dir);
  REQUIRE(out.summary.workers_reporting == trainers);
  REQUIRE(out.summary.resumed_from == 12);
  REQUIRE(out.summary.mismatches == 0);
  REQUIRE(out.summary.distinct_checksums == 1);
  REQUIRE(out.summary.values_checked == uint64_t(trainers) * (30 - 12 + 1) * elements);
  // Both servers wrote a last checkpoint, numbered after the first job's.
  std::string listing;
  for (int rank = 0; rank < 2; ++rank) {
    REQUIRE(access(Name(dir, rank, 2, 2, 30).c_str(), F_OK) == 0);
  }
}

TEST_CASE("geops-launch --restart survives killed processes and ends with the exact model",
          "[durable][cluster][chaos]") {
  // Three parties; the global server, a whole party's server, a worker and
  // a party server die in turn. Each death restarts the cluster from the
  // newest checkpoint (every 5 rounds); the trainers check every value of
  // every round they run against the exact sums, so the final model is
  // the fault-free one.
  const std::string logs = TempDir();
  const std::string out_path = logs + "/launch.out";
  const std::string cmd = absl::StrCat(
      GEOPS_LAUNCH, " --parties 3 --workers 2 --global-servers 2 --rounds 120 --rule sgd",
      " --key-sizes 3000,5000,20000",
      " --checkpoint-rounds 5 --restart 5",
      " --kill central.global_server0@20 --kill B.server0@45 --kill A.worker1@70",
      " --kill C.server0@95 --quiet --timeout 240 --log-dir ", logs, "/run > ", out_path,
      " 2>&1");
  const int rc = std::system(cmd.c_str());
  const std::string out = testing::ReadFile(out_path);
  INFO(out);
  REQUIRE(WIFEXITED(rc));
  REQUIRE(WEXITSTATUS(rc) == 0);
  for (const char* name : {"central.global_server0", "B.server0", "A.worker1", "C.server0"}) {
    REQUIRE(absl::StrContains(out, absl::StrCat("fault: ", name, " killed")));
  }
  REQUIRE(absl::StrContains(out, "the cluster was restarted 4 times"));
  REQUIRE(absl::StrContains(out, "check=every worker saw the exact global result"));
  // The last run went on from a checkpoint cut at or after the last fault's
  // previous multiple of 5 (the fault fired after round 95 was printed).
  auto at = out.find("the last run resumed from round ");
  REQUIRE(at != std::string::npos);
  const int resumed = std::atoi(out.c_str() + at + 32);
  REQUIRE(resumed >= 90);
  REQUIRE(resumed % 5 == 0);
}

}  // namespace
}  // namespace geops
