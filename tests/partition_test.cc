#include <catch2/catch.hpp>
#include <limits>
#include <vector>

#include "core/kv/partition.h"

using namespace geops;

TEST_CASE("key ranges cover the key space in order, one slice per server") {
  for (int n : {1, 2, 3, 5, 8, 13}) {
    REQUIRE(OwnerOf(0, n) == 0);
    REQUIRE(OwnerOf(std::numeric_limits<Key>::max(), n) == n - 1);
    for (int r = 0; r < n; ++r) {
      Key begin = RangeBegin(r, n);
      REQUIRE(OwnerOf(begin, n) == r);
      if (begin > 0) REQUIRE(OwnerOf(begin - 1, n) == r - 1);
    }
  }
}

TEST_CASE("SpreadKey gives every server an even share of numbered keys") {
  for (int servers : {1, 2, 3, 4}) {
    const int keys = 12;
    std::vector<int> per(servers, 0);
    Key prev = 0;
    for (int k = 0; k < keys; ++k) {
      Key key = SpreadKey(k, keys);
      if (k > 0) REQUIRE(key > prev);  // increasing, as requests require
      prev = key;
      ++per[OwnerOf(key, servers)];
    }
    for (int c : per) REQUIRE(c == keys / servers);
  }
}
