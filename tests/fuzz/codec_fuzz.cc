// libFuzzer target for everything that parses bytes from the network: the
// wire header and flat messages, the multipart split, the control bodies,
// and the WAN tier's compressed values. Build with -DGEOPS_FUZZ=ON and clang; run
//   build-fuzz/tests/geops_codec_fuzz -max_total_time=60
#include <cstddef>
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <span>

#include "core/wire/codec.h"
#include "core/kv/sparse.h"
#include "core/wire/control.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace geops;
  Buffer whole = Buffer::CopyOf(data, size);
  (void)wire::DecodeFlat(whole);
  (void)DecodeNodeTable(whole);
  (void)DecodeNodeInfo(whole);
  (void)DecodeRule(whole);
  (void)DecodeU32(whole);
  // As a compressed value, decoded into a key of the size it claims (up
  // to a bound: a real receiver takes the size from the key it holds) and
  // into one of a size it does not claim.
  if (auto info = InspectSparse(whole); info.ok()) {
    const uint64_t n = std::min<uint64_t>(info->elements, 1 << 16);
    Buffer dense = Buffer::Allocate(n * sizeof(float));
    (void)DecodeSparse(whole, dense);
  }
  (void)DecodeSparse(whole, Buffer::Allocate(64 * sizeof(float)));
  // The same bytes as a multipart message: the first byte says how long
  // the header is; the rest is cut into the segment lengths it announces.
  if (size > 1) {
    size_t header_len = std::min<size_t>(data[0] * 8u, size - 1);
    std::span<const std::byte> header(whole.data() + 1, header_len);
    auto info = wire::DecodeHeader(header);
    if (info.ok()) {
      std::vector<Buffer> segments;
      size_t off = 1 + header_len;
      for (uint64_t len : info->lengths) {
        size_t take = std::min<uint64_t>(len, size - off);
        segments.push_back(whole.Slice(off, take));
        off += take;
      }
      (void)wire::Decode(header, std::move(segments));
    }
  }
  return 0;
}
