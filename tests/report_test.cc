// The result lines: what a process prints, geops-launch reads back whole.
#include <catch2/catch.hpp>

#include "core/node/report.h"

using namespace geops::report;

TEST_CASE("result lines round-trip, and a line missing a field is not counted", "[report]") {
  TierStats t;
  t.role = "server+global_worker";
  t.tier = "global";
  t.id = 9;
  t.sent_bytes = 1ull << 40;
  t.staged_bytes = 77;
  t.max_rss_kb = 123456;
  auto tb = TierStats::Parse(t.Format());
  REQUIRE(tb);
  REQUIRE(tb->role == t.role);
  REQUIRE(tb->tier == "global");
  REQUIRE(tb->sent_bytes == t.sent_bytes);
  REQUIRE(tb->staged_bytes == 77);
  REQUIRE(tb->max_rss_kb == 123456);

  Worker w;
  w.rank = 3;
  w.trained = w.counted = true;
  w.rounds = 10;
  w.values_checked = 1000;
  w.checksum = 0xfedcba9876543210ull;
  w.seconds = 1.5;
  auto wb = Worker::Parse(w.Format());
  REQUIRE(wb);
  REQUIRE(wb->checksum == w.checksum);
  REQUIRE(wb->values_checked == 1000);
  REQUIRE(wb->rounds == 10);
  Worker idle;
  idle.master = true;
  idle.init_bytes = 4096;
  auto ib = Worker::Parse(idle.Format());
  REQUIRE(ib);
  REQUIRE_FALSE(ib->trained);

  Learner l;
  l.shard = 0;
  l.shards = 4;
  l.rounds = 500;
  l.test_accuracy = 0.8755;
  auto lb = Learner::Parse(l.Format());
  REQUIRE(lb);
  REQUIRE(lb->shards == 4);
  REQUIRE(*lb->test_accuracy == Approx(0.8755));
  l.shard = 1;
  l.test_accuracy.reset();
  REQUIRE_FALSE(Learner::Parse(l.Format())->test_accuracy);

  // Renamed or missing fields, other tags, a tag that is only a prefix.
  std::string line = w.Format();
  line.replace(line.find("values_checked="), 15, "values_check=");
  REQUIRE_FALSE(Worker::Parse(line));
  REQUIRE_FALSE(Worker::Parse("geops-worker rank=1 master=0"));
  REQUIRE_FALSE(Worker::Parse(t.Format()));
  REQUIRE_FALSE(TierStats::Parse("geops-statsX role=a"));
}
