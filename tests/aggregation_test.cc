#include <catch2/catch.hpp>
#include <cstring>
#include <vector>

#include "core/kv/aggregation.h"
#include "core/kv/dtype_ops.h"

using namespace geops;

namespace {

template <typename T>
Buffer Of(std::vector<T> v) {
  return Buffer::CopyOf(v.data(), v.size() * sizeof(T));
}
template <typename T>
std::vector<T> Values(const Buffer& b) {
  std::vector<T> v(b.size() / sizeof(T));
  std::memcpy(v.data(), b.data(), b.size());
  return v;
}

}  // namespace

TEST_CASE("a round closes after exactly the expected contributions") {
  AggregationTable t(3);
  auto a = t.Add(5, 1, DType::kFloat32, Of<float>({1, 2}));
  REQUIRE(a.ok());
  REQUIRE_FALSE(a->has_value());
  REQUIRE_FALSE(t.Add(5, 1, DType::kFloat32, Of<float>({10, 20}))->has_value());
  // A contribution to the next round is kept apart.
  REQUIRE_FALSE(t.Add(5, 2, DType::kFloat32, Of<float>({100, 100}))->has_value());
  auto done = t.Add(5, 1, DType::kFloat32, Of<float>({100, 200}));
  REQUIRE(done.ok());
  REQUIRE(done->has_value());
  REQUIRE(Values<float>(**done) == std::vector<float>{111, 222});
  REQUIRE(t.open_rounds() == 1);
}

TEST_CASE("the first contribution becomes the accumulator: no copy per round") {
  AggregationTable t(3);
  Buffer first = Of<int32_t>({1, 10});
  (void)t.Add(1, 1, DType::kInt32, first);
  Buffer second = Of<int32_t>({2, 20});
  (void)t.Add(1, 1, DType::kInt32, second);
  auto done = t.Add(1, 1, DType::kInt32, Of<int32_t>({4, 40}));
  REQUIRE(done->has_value());
  REQUIRE((*done)->data() == first.data());  // summed in place
  REQUIRE(Values<int32_t>(**done) == std::vector<int32_t>{7, 70});
  REQUIRE(Values<int32_t>(second) == std::vector<int32_t>{2, 20});  // only read
}

TEST_CASE("dtype or size mismatches and stale rounds are refused") {
  AggregationTable t(1);
  REQUIRE(t.Add(1, 1, DType::kFloat32, Of<float>({1, 2}))->has_value());
  (void)t.Publish(1, 1, DType::kFloat32, Of<float>({1, 2}));
  REQUIRE_FALSE(t.Add(1, 2, DType::kFloat64, Of<double>({1})).ok());
  REQUIRE_FALSE(t.Add(1, 2, DType::kFloat32, Of<float>({1, 2, 3})).ok());
  auto stale = t.Add(1, 1, DType::kFloat32, Of<float>({1, 2}));
  REQUIRE_FALSE(stale.ok());
  REQUIRE(absl::IsFailedPrecondition(stale.status()));
}

TEST_CASE("pulls park until their round is published, then all are answered") {
  AggregationTable t(2);
  REQUIRE_FALSE(t.PullOrPark(9, 0, 100).has_value());
  REQUIRE(t.HasParked(9, 0));
  REQUIRE_FALSE(t.PullOrPark(9, 1, 101).has_value());
  REQUIRE_FALSE(t.PullOrPark(9, 1, 102).has_value());
  auto r0 = t.Publish(9, 0, DType::kInt64, Of<int64_t>({7}));
  REQUIRE(r0 == std::vector<AggregationTable::Token>{100});
  auto r1 = t.Publish(9, 1, DType::kInt64, Of<int64_t>({8}));
  REQUIRE(r1.size() == 2);
  // Later pulls for an older round get the newest result at once.
  auto now = t.PullOrPark(9, 0, 103);
  REQUIRE(now.has_value());
  REQUIRE(Values<int64_t>(*now) == std::vector<int64_t>{8});
  // An older result never replaces a newer one.
  REQUIRE(t.Publish(9, 0, DType::kInt64, Of<int64_t>({1})).empty());
  REQUIRE(t.Latest(9)->round == 1);
}

TEST_CASE("sums are exact for every dtype and integers wrap instead of overflowing") {
  Buffer f = Of<double>({0.5, -1});
  AddInto(DType::kFloat64, f, Of<double>({0.25, 1}));
  REQUIRE(Values<double>(f) == std::vector<double>{0.75, 0});
  Buffer i = Of<int32_t>({INT32_MAX});
  AddInto(DType::kInt32, i, Of<int32_t>({1}));
  REQUIRE(Values<int32_t>(i) == std::vector<int32_t>{INT32_MIN});
  Buffer l = Of<int64_t>({1LL << 40});
  AddInto(DType::kInt64, l, Of<int64_t>({-(1LL << 40) + 3}));
  REQUIRE(Values<int64_t>(l) == std::vector<int64_t>{3});
}

TEST_CASE("unaligned inputs are summed correctly") {
  std::vector<std::byte> raw(4 * 5 + 1);
  Buffer unaligned = Buffer::Wrap(raw.data() + 1, 4 * 5);
  float v[5] = {1, 2, 3, 4, 5};
  std::memcpy(unaligned.data(), v, sizeof(v));
  Buffer acc = Of<float>({10, 10, 10, 10, 10});
  AddInto(DType::kFloat32, acc, unaligned);
  REQUIRE(Values<float>(acc) == std::vector<float>{11, 12, 13, 14, 15});
}

TEST_CASE("sgd applies w - lr * g and refuses integer values") {
  Buffer w = Of<float>({10, 4});
  Buffer g = Of<float>({2, -4});
  REQUIRE(ApplySgd(DType::kFloat32, 0.5, w, g).ok());
  REQUIRE(Values<float>(g) == std::vector<float>{9, 6});
  REQUIRE_FALSE(ApplySgd(DType::kInt32, 0.5, Of<int32_t>({1}), Of<int32_t>({1})).ok());
}

TEST_CASE("pushes are held for the open round and the next one only") {
  AggregationTable t(2);
  // Nothing published yet: round 1 is open, round 2 may start early.
  REQUIRE(t.Add(3, 1, DType::kFloat32, Of<float>({1}))->has_value() == false);
  REQUIRE(t.Add(3, 2, DType::kFloat32, Of<float>({1}))->has_value() == false);
  for (uint64_t far : {3u, 4u, 200u}) {
    auto r = t.Add(3, far, DType::kFloat32, Of<float>({1}));
    REQUIRE_FALSE(r.ok());
    REQUIRE(absl::IsOutOfRange(r.status()));
    REQUIRE(std::string(r.status().message()).find("round 1 is open") != std::string::npos);
  }
  REQUIRE(t.open_rounds() == 2);  // the refused pushes hold nothing
  // Once round 1 is published, round 3 becomes acceptable.
  REQUIRE(t.Add(3, 1, DType::kFloat32, Of<float>({1}))->has_value());
  (void)t.Publish(3, 1, DType::kFloat32, Of<float>({2}));
  REQUIRE(t.Add(3, 3, DType::kFloat32, Of<float>({1})).ok());
  REQUIRE_FALSE(t.Add(3, 4, DType::kFloat32, Of<float>({1})).ok());
}
