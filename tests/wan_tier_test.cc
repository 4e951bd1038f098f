// The WAN tier: how a party server's sums cross to the global servers.
// Real `geops` processes on 127.0.0.1, every value of every round checked
// bit for bit by every worker (RunExact); what is asserted beyond that is
// read from the processes' own counters and logs.
#include <catch2/catch.hpp>

#include "absl/strings/str_split.h"
#include "cluster_util.h"
#include "core/node/report.h"

using namespace geops::deploy;
using namespace geops::testing;

namespace {

// The geops-stats line `process` printed for `tier` ("local" or "global").
geops::report::TierStats StatsOf(const std::vector<ProcessResult>& results,
                                 const std::string& process, const std::string& tier) {
  for (const auto& r : results) {
    if (r.name != process) continue;
    for (absl::string_view line : absl::StrSplit(r.stdout_text, '\n')) {
      auto t = geops::report::TierStats::Parse(std::string_view(line.data(), line.size()));
      if (t && t->tier == tier) return *t;
    }
  }
  FAIL("no geops-stats line of tier " << tier << " from " << process);
  return {};
}

// Bytes each global server summed ("server done: ... N bytes summed").
std::vector<uint64_t> BytesSummed(const std::vector<ProcessResult>& results) {
  std::vector<uint64_t> out;
  for (const auto& r : results) {
    if (r.name.find("global_server") == std::string::npos) continue;
    std::string log = ReadFile(r.stderr_path);
    size_t at = log.find(" bytes summed");
    REQUIRE(at != std::string::npos);
    size_t begin = log.rfind(' ', at - 1) + 1;
    out.push_back(std::stoull(log.substr(begin, at - begin)));
  }
  return out;
}

}  // namespace

TEST_CASE("keys above MXNET_KVSTORE_BIGARRAY_BOUND are spread over 3 global servers",
          "[cluster][wan]") {
  // Two big keys among small ones; central workers train too, so the
  // central party's own clients slice as the parties' servers do.
  Topology t = Base(25, "5,300000,1000,250001,17,4096");
  t.global_servers = 3;
  t.central_training = true;
  t.central_workers = 1;
  t.env["MXNET_KVSTORE_BIGARRAY_BOUND"] = "200000";
  const uint64_t per_round = 4 * Elements(t.env.at("GEOPS_KEY_SIZES"));
  for (const char* rule : {"sum", "sgd"}) {
    DYNAMIC_SECTION("rule " << rule) {
      t.env["GEOPS_RULE"] = rule;
      Outcome out = RunExact(t, 6, nullptr, /*zero_copy=*/false);
      // Each global server summed about a third of every round: whole, the
      // two big keys would sit on at most two of them.
      std::vector<uint64_t> summed = BytesSummed(out.results);
      REQUIRE(summed.size() == 3);
      uint64_t total = 0;
      for (uint64_t b : summed) total += b;
      for (uint64_t b : summed) {
        INFO("bytes summed per global server: " << summed[0] << " " << summed[1] << " "
                                                << summed[2]);
        REQUIRE(b * 4 >= total);
      }
      REQUIRE(total >= 25 * per_round * 3);  // 3 contributions per round: 2 parties + central
    }
  }
}

TEST_CASE("hundreds of tiny keys cross the WAN in a few messages per round",
          "[cluster][wan]") {
  std::string sizes;
  for (int k = 0; k < 600; ++k) sizes += (k ? "," : "") + std::to_string(1 + k % 7);
  Topology t = Base(20, sizes);
  t.global_servers = 2;
  Outcome out = RunExact(t, 4, nullptr, /*zero_copy=*/false);
  // Per round a party server sends one push-pull per global server (plus
  // heartbeats); without coalescing it would send 600.
  const uint64_t sent = StatsOf(out.results, "A.server0", "global").sent_msgs;
  INFO("A.server0 sent " << sent << " global-tier messages in 20 rounds");
  REQUIRE(sent < 20 * 10);

  // The same with coalescing off: one message per key, still exact.
  t.env["GEOPS_WAN_COALESCE_BYTES"] = "0";
  Outcome single = RunExact(t, 4, nullptr, /*zero_copy=*/false);
  REQUIRE(StatsOf(single.results, "A.server0", "global").sent_msgs >= 20 * 600);
}

TEST_CASE("ENABLE_P3: sums leave by priority through a small window, still exact",
          "[cluster][wan]") {
  // Big keys (sliced over 2 global servers) and small ones, a 1 MiB window
  // so that most of every round waits its turn, and the sgd rule.
  Topology t = Base(20, "400000,5,1000,300000,17,4096,250000");
  t.global_servers = 2;
  t.env["ENABLE_P3"] = "1";
  t.env["GEOPS_WAN_WINDOW_KB"] = "1024";
  t.env["MXNET_KVSTORE_BIGARRAY_BOUND"] = "200000";
  t.env["GEOPS_RULE"] = "sgd";
  Outcome out = RunExact(t, 4, nullptr, /*zero_copy=*/false);
  // Pushes and pulls travel apart: at least two requests per batch.
  REQUIRE(StatsOf(out.results, "A.server0", "global").sent_msgs >= 20 * 4);
}

TEST_CASE("GEOPS_WAN_DTYPE: the WAN carries 16 bits per value, the sums stay exact",
          "[cluster][wan]") {
  // Small integers are exact in float16 and bfloat16, so the trainer's
  // bit-exact check holds; what halves is the global tier's traffic.
  Topology t = Base(10, "20000,3000,7");
  t.global_servers = 2;
  t.env["GEOPS_RULE"] = "sum";
  Outcome full = RunExact(t, 4, nullptr, /*zero_copy=*/false);
  const double full_bytes = StatsOf(full.results, "A.server0", "global").sent_bytes +
                            StatsOf(full.results, "A.server0", "global").recv_bytes;
  for (const char* d : {"fp16", "bf16"}) {
    DYNAMIC_SECTION("GEOPS_WAN_DTYPE=" << d) {
      t.env["GEOPS_WAN_DTYPE"] = d;
      Outcome half = RunExact(t, 4, nullptr, /*zero_copy=*/false);
      const double bytes = StatsOf(half.results, "A.server0", "global").sent_bytes +
                           StatsOf(half.results, "A.server0", "global").recv_bytes;
      INFO("party A's WAN bytes: " << bytes << " against " << full_bytes << " in float32");
      REQUIRE(bytes / full_bytes > 0.45);
      REQUIRE(bytes / full_bytes < 0.55);
      // The party's own tier stays float32 (heartbeats aside).
      const double local = StatsOf(half.results, "A.server0", "local").recv_bytes;
      REQUIRE(local / StatsOf(full.results, "A.server0", "local").recv_bytes > 0.99);
    }
  }
}
