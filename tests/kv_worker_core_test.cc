// KVWorkerCore, the dtype-at-run-time worker both front ends (KVWorker<Val>
// and the Python module) stand on: what it refuses before anything is
// sent, how it cuts values and destinations per key, and that a refused
// request leaves the worker's rounds where they were.
#include <catch2/catch.hpp>

#include "core/kv/kv_worker_core.h"
#include "core/kv/partition.h"
#include "tests/inproc_cluster.h"

using namespace geops;

namespace {

KVWorkerCore::Call PushOf(std::vector<Key> keys, size_t elems, std::vector<int64_t> lens = {}) {
  KVWorkerCore::Call c;
  c.keys = std::move(keys);
  c.dtype = DType::kFloat64;
  c.flags = msgflag::kPush;
  c.values = Buffer::Allocate(elems * sizeof(double));
  c.lens = std::move(lens);
  return c;
}

std::string Refusal(KVWorkerCore::Call c) {
  auto p = KVWorkerCore::Prepare(std::move(c));
  REQUIRE_FALSE(p.ok());
  REQUIRE(absl::IsInvalidArgument(p.status()));
  return std::string(p.status().message());
}

}  // namespace

TEST_CASE("kv worker core: requests with bad keys or lens are refused naming the problem",
          "[kv]") {
  REQUIRE_THAT(Refusal(PushOf({5, 3}, 4)), Catch::Contains("strictly increasing (key 3 follows 5)"));
  REQUIRE_THAT(Refusal(PushOf({3, 3}, 4)), Catch::Contains("strictly increasing"));
  REQUIRE_THAT(Refusal(PushOf({}, 4)), Catch::Contains("at least one key"));
  REQUIRE_THAT(Refusal(PushOf({1, 2, 3}, 4)), Catch::Contains("do not split evenly over 3 keys"));
  REQUIRE_THAT(Refusal(PushOf({1, 2}, 4, {1})), Catch::Contains("lens has 1 entries for 2 keys"));
  REQUIRE_THAT(Refusal(PushOf({1, 2}, 4, {1, 2})), Catch::Contains("do not cover"));
  REQUIRE_THAT(Refusal(PushOf({1, 2}, 4, {-1, 5})), Catch::Contains("do not cover"));
  KVWorkerCore::Call ragged = PushOf({1}, 1);
  ragged.values = Buffer::Allocate(12);  // one and a half doubles
  REQUIRE_THAT(Refusal(ragged), Catch::Contains("not whole float64 values"));
  KVWorkerCore::Call both = PushOf({1, 2}, 4);
  both.flags |= msgflag::kPull;
  both.dest = Buffer::Allocate(4 * sizeof(double));
  both.dests = {Buffer::Allocate(8), Buffer::Allocate(8)};
  REQUIRE_THAT(Refusal(both), Catch::Contains("per key or in one buffer"));
  KVWorkerCore::Call short_dests = PushOf({1, 2}, 4);
  short_dests.dests = {Buffer::Allocate(8)};
  REQUIRE_THAT(Refusal(short_dests), Catch::Contains("1 destinations for 2 keys"));
}

TEST_CASE("kv worker core: values and one destination buffer are cut per key alike", "[kv]") {
  // By lens: views into the caller's buffers, nothing copied.
  KVWorkerCore::Call c = PushOf({1, 2, 3}, 10, {2, 0, 8});
  c.flags |= msgflag::kPull;
  c.dest = Buffer::Allocate(10 * sizeof(double));
  const std::byte* values = c.values.data();
  const std::byte* dest = c.dest->data();
  auto p = KVWorkerCore::Prepare(c);
  REQUIRE(p.ok());
  REQUIRE(p->keys == std::vector<Key>{1, 2, 3});
  REQUIRE(p->values.size() == 3);
  REQUIRE(p->dests.size() == 3);
  const size_t want[] = {2, 0, 8}, at[] = {0, 2, 2};
  for (int i = 0; i < 3; ++i) {
    REQUIRE(p->values[i].size() == want[i] * sizeof(double));
    REQUIRE(p->dests[i].size() == want[i] * sizeof(double));
    if (want[i] > 0) {
      REQUIRE(p->values[i].data() == values + at[i] * sizeof(double));
      REQUIRE(p->dests[i].data() == dest + at[i] * sizeof(double));
    }
  }
  // Without lens a push-pull's results land where its values' even split
  // puts them: the destination must hold as many values.
  c.lens.clear();
  c.values = Buffer::Allocate(9 * sizeof(double));
  c.dest = Buffer::Allocate(9 * sizeof(double));
  p = KVWorkerCore::Prepare(c);
  REQUIRE(p.ok());
  for (const Buffer& d : p->dests) REQUIRE(d.size() == 3 * sizeof(double));
  c.dest = Buffer::Allocate(12 * sizeof(double));
  REQUIRE_THAT(Refusal(c), Catch::Contains("destination: lens do not cover"));
  // A pull into one buffer splits the buffer itself.
  KVWorkerCore::Call pull;
  pull.keys = {4, 9};
  pull.dtype = DType::kInt32;
  pull.flags = msgflag::kPull;
  pull.dest = Buffer::Allocate(6 * sizeof(int32_t));
  p = KVWorkerCore::Prepare(pull);
  REQUIRE(p.ok());
  REQUIRE(p->values.empty());
  REQUIRE(p->dests.size() == 2);
  REQUIRE(p->dests[1].size() == 3 * sizeof(int32_t));
}

TEST_CASE("kv worker core: a refused push leaves the worker's rounds in step", "[kv][tier]") {
  geops::testing::InProcCluster c(1, 2);
  REQUIRE(c.Start().ok());
  const std::vector<Key> keys = {SpreadKey(0, 2), SpreadKey(1, 2)};
  REQUIRE(c.kv[0]->Wait(c.kv[0]->Init(keys, std::vector<float>(4, 1.0f))).ok());
  // Refused through Wait (and the completion), not by an exception; were
  // its round counted, worker 0's next push would wait for a round the
  // other worker never joins.
  KVWorkerCore& core = c.kv[0]->core();
  bool called = false;
  KVWorkerCore::Call bad;
  bad.keys = keys;
  bad.dtype = DType::kFloat32;
  bad.flags = msgflag::kPush;
  bad.values = Buffer::Allocate(3 * sizeof(float));
  int ts = core.Send(std::move(bad), KVWorkerCore::Notify([&called] { called = true; }));
  REQUIRE(absl::IsInvalidArgument(core.Wait(ts)));
  REQUIRE(called);
  std::vector<float> a = {1, 2, 3, 4}, b = {10, 20, 30, 40}, out_a, out_b;
  int ta = c.kv[0]->PushPull(keys, a, &out_a);
  int tb = c.kv[1]->PushPull(keys, b, &out_b);
  REQUIRE(c.kv[0]->Wait(ta).ok());
  REQUIRE(c.kv[1]->Wait(tb).ok());
  REQUIRE(out_a == std::vector<float>{11, 22, 33, 44});
  REQUIRE(out_b == out_a);
  REQUIRE(c.Finish().ok());
}
