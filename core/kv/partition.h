// Key-range sharding: server r of n owns the r-th of n equal slices of the
// 64-bit key space, as in ps-lite. Applications that number keys 0, 1, 2...
// should spread them with SpreadKey so that every server gets a share.
#pragma once

#include <cstdint>

#include "core/wire/message.h"

namespace geops {

// Owner of `key` among `num_servers` servers.
inline int OwnerOf(Key key, int num_servers) {
  return static_cast<int>((static_cast<unsigned __int128>(key) * num_servers) >> 64);
}

// First key owned by server `rank` of `num_servers`.
inline Key RangeBegin(int rank, int num_servers) {
  unsigned __int128 scaled = static_cast<unsigned __int128>(rank) << 64;
  return static_cast<Key>((scaled + num_servers - 1) / num_servers);
}

// Key number `index` of `count`, placed at the centre of its own 1/count of
// the key space, so that any server count splits the keys evenly.
inline Key SpreadKey(uint64_t index, uint64_t count) {
  unsigned __int128 pos = (static_cast<unsigned __int128>(2 * index + 1) << 64) / (2 * count);
  return static_cast<Key>(pos);
}

// Bytes [offset, offset + length) of slice `rank` of `count` of a value of
// `bytes` bytes in elements of `elem` bytes: contiguous, in whole elements,
// sizes differing by at most one element.
struct ByteRange {
  size_t offset = 0;
  size_t length = 0;
};
inline ByteRange SliceRange(size_t bytes, size_t elem, int rank, int count) {
  const size_t n = bytes / elem;
  const size_t begin = n * rank / count, end = n * (rank + 1) / count;
  return {begin * elem, (end - begin) * elem};
}

}  // namespace geops
