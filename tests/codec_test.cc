#include <catch2/catch.hpp>
#include <cstring>
#include <random>

#include "core/wire/codec.h"
#include "core/wire/control.h"

using namespace geops;

namespace {

Message DataMessage() {
  Message m;
  m.header.command = Command::kData;
  m.header.sender = 9;
  m.header.recipient = 8;
  m.header.flags = msgflag::kRequest | msgflag::kPush | msgflag::kPull;
  m.header.timestamp = 42;
  m.header.round = 7;
  m.header.dtype = DType::kFloat32;
  m.header.key_count = 2;
  Key keys[2] = {3, 99};
  m.segments.push_back(Buffer::CopyOf(keys, sizeof(keys)));
  float a[3] = {1, 2, 3};
  float b[1] = {4};
  m.segments.push_back(Buffer::CopyOf(a, sizeof(a)));
  m.segments.push_back(Buffer::CopyOf(b, sizeof(b)));
  return m;
}

std::vector<std::byte> Bytes(const Buffer& b) { return {b.data(), b.data() + b.size()}; }

}  // namespace

TEST_CASE("a data message survives encode/decode, multipart and flat") {
  Message m = DataMessage();
  Buffer header = wire::EncodeHeader(m);
  REQUIRE(header.size() == wire::EncodedHeaderSize(3));
  auto d = wire::Decode({header.data(), header.size()}, m.segments);
  REQUIRE(d.ok());
  REQUIRE(d->header.sender == 9);
  REQUIRE(d->header.recipient == 8);
  REQUIRE(d->header.timestamp == 42);
  REQUIRE(d->header.round == 7);
  REQUIRE(d->header.dtype == DType::kFloat32);
  REQUIRE(d->header.flags == m.header.flags);
  REQUIRE(d->segments.size() == 3);
  // Decoding adopts the segments; it does not copy them.
  REQUIRE(d->segments[1].data() == m.segments[1].data());

  Buffer flat = wire::EncodeFlat(m);
  auto f = wire::DecodeFlat(flat);
  REQUIRE(f.ok());
  REQUIRE(f->segments.size() == 3);
  REQUIRE(Bytes(f->segments[1]) == Bytes(m.segments[1]));
  REQUIRE(f->segments[1].data() >= flat.data());
  REQUIRE(f->segments[1].data() < flat.data() + flat.size());
}

TEST_CASE("every truncation of a flat message is rejected") {
  Buffer flat = wire::EncodeFlat(DataMessage());
  for (size_t n = 0; n < flat.size(); ++n) {
    INFO(n);
    auto r = wire::DecodeFlat(flat.Slice(0, n));
    REQUIRE_FALSE(r.ok());
    REQUIRE(absl::IsDataLoss(r.status()));
  }
}

TEST_CASE("trailing bytes, oversized lengths and mismatched segments are rejected") {
  Message m = DataMessage();
  Buffer flat = wire::EncodeFlat(m);
  Buffer longer = Buffer::Allocate(flat.size() + 1);
  std::memcpy(longer.data(), flat.data(), flat.size());
  REQUIRE_FALSE(wire::DecodeFlat(longer).ok());

  // A segment length pointing past the end.
  Buffer bad = Buffer::CopyOf(flat.data(), flat.size());
  uint64_t huge = uint64_t{1} << 40;
  std::memcpy(bad.data() + wire::kFixedHeaderBytes, &huge, 8);
  REQUIRE_FALSE(wire::DecodeFlat(bad).ok());

  Buffer header = wire::EncodeHeader(m);
  std::vector<Buffer> fewer(m.segments.begin(), m.segments.begin() + 2);
  REQUIRE_FALSE(wire::Decode({header.data(), header.size()}, fewer).ok());
  std::vector<Buffer> wrong = m.segments;
  wrong[2] = Buffer::Allocate(8);
  REQUIRE_FALSE(wire::Decode({header.data(), header.size()}, wrong).ok());
}

TEST_CASE("bad enums and shapes are rejected") {
  auto with = [](auto mutate) {
    Message m = DataMessage();
    mutate(m);
    Buffer h = wire::EncodeHeader(m);
    return wire::Decode({h.data(), h.size()}, m.segments);
  };
  REQUIRE(with([](Message&) {}).ok());
  REQUIRE_FALSE(with([](Message& m) { m.header.command = static_cast<Command>(999); }).ok());
  REQUIRE_FALSE(with([](Message& m) { m.header.dtype = static_cast<DType>(77); }).ok());
  REQUIRE_FALSE(with([](Message& m) { m.header.flags |= 1u << 20; }).ok());
  REQUIRE_FALSE(with([](Message& m) { m.header.key_count = 3; }).ok());
  REQUIRE_FALSE(with([](Message& m) { m.header.key_count = 0; }).ok());
  REQUIRE_FALSE(with([](Message& m) { m.header.dtype = DType::kFloat64; }).ok());  // 12 B % 8
  REQUIRE_FALSE(with([](Message& m) { m.header.dtype = DType::kNone; }).ok());
  REQUIRE_FALSE(with([](Message& m) { m.segments.pop_back(); }).ok());
  // An error response carries text, never keys, and is never a request.
  auto error = [](uint32_t flags, uint32_t keys) {
    Message m;
    m.header.command = Command::kData;
    m.header.flags = flags;
    m.header.key_count = keys;
    m.segments.push_back(EncodeText("boom"));
    Buffer h = wire::EncodeHeader(m);
    return wire::Decode({h.data(), h.size()}, m.segments);
  };
  REQUIRE(error(msgflag::kError, 0).ok());
  REQUIRE_FALSE(error(msgflag::kError, 1u << 28).ok());
  REQUIRE_FALSE(error(msgflag::kError | msgflag::kRequest, 0).ok());

  Message m = DataMessage();
  Buffer h = wire::EncodeHeader(m);
  Buffer magic = Buffer::CopyOf(h.data(), h.size());
  magic.data()[0] = std::byte{0};
  REQUIRE_FALSE(wire::Decode({magic.data(), magic.size()}, m.segments).ok());
  Buffer version = Buffer::CopyOf(h.data(), h.size());
  version.data()[4] = std::byte{9};
  auto v = wire::Decode({version.data(), version.size()}, m.segments);
  REQUIRE_FALSE(v.ok());
  REQUIRE(std::string(v.status().message()).find("version") != std::string::npos);
}

TEST_CASE("random and mutated inputs never crash the decoder") {
  std::mt19937_64 rng(12345);
  Buffer good = wire::EncodeFlat(DataMessage());
  int accepted = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    Buffer b;
    if (iter % 2 == 0) {
      size_t n = rng() % 200;
      b = Buffer::Allocate(n);
      for (size_t i = 0; i < n; ++i) b.data()[i] = static_cast<std::byte>(rng());
      if (n >= 8 && iter % 4 == 0) {
        // Valid magic and version so the deeper checks get exercised.
        std::memcpy(b.data(), good.data(), 8);
      }
    } else {
      b = Buffer::CopyOf(good.data(), good.size());
      for (int flips = 1 + rng() % 4; flips > 0; --flips) {
        b.data()[rng() % b.size()] = static_cast<std::byte>(rng());
      }
    }
    auto r = wire::DecodeFlat(b);
    if (r.ok()) {
      ++accepted;
      // Whatever is accepted is internally consistent.
      size_t total = 0;
      for (const auto& s : r->segments) total += s.size();
      REQUIRE(total + wire::EncodedHeaderSize(r->segments.size()) == b.size());
    }
  }
  // Mutations of payload bytes keep a message valid; the checks let those through.
  REQUIRE(accepted > 0);
}

TEST_CASE("control bodies round-trip and reject garbage") {
  NodeInfo n;
  n.id = 11;
  n.role = Role::kServer;
  n.rank = 1;
  n.host = "10.0.0.7";
  n.port = 4242;
  n.party = "10.0.0.1:9000";
  n.rank_hint = 3;
  n.master = true;
  n.trains = false;
  auto back = DecodeNodeTable(EncodeNodeTable({n, n}));
  REQUIRE(back.ok());
  REQUIRE(back->size() == 2);
  REQUIRE((*back)[1].host == "10.0.0.7");
  REQUIRE((*back)[1].party == "10.0.0.1:9000");
  REQUIRE((*back)[1].rank_hint == 3);
  REQUIRE((*back)[1].master);
  REQUIRE_FALSE((*back)[1].trains);

  Buffer one = EncodeNodeInfo(n);
  for (size_t len = 0; len < one.size(); ++len) REQUIRE_FALSE(DecodeNodeInfo(one.Slice(0, len)).ok());
  REQUIRE_FALSE(DecodeRule(Buffer::Allocate(3)).ok());
  RuleSpec r{UpdateRule::kSgd, 0.25};
  auto rr = DecodeRule(EncodeRule(r));
  REQUIRE(rr.ok());
  REQUIRE(rr->rule == UpdateRule::kSgd);
  REQUIRE(rr->learning_rate == 0.25);
  REQUIRE_FALSE(rr->policy_set);
  // The master worker's WAN policy travels with the rule.
  RuleSpec p{UpdateRule::kAverage, 0, 6};
  p.policy_set = true;
  p.wan_topk = 0.01;
  p.wan_topk_min_elems = 1000;
  p.wan_dtype = DType::kBFloat16;
  p.wan_mixed = true;
  p.wan_staleness = 7;
  p.hfa_k2 = 3;
  Buffer pb = EncodeRule(p);
  auto pr = DecodeRule(pb);
  REQUIRE(pr.ok());
  REQUIRE(pr->rule == UpdateRule::kAverage);
  REQUIRE(pr->average_over == 6);
  REQUIRE(pr->policy_set);
  REQUIRE(pr->wan_topk == 0.01);
  REQUIRE(pr->wan_topk_min_elems == 1000);
  REQUIRE(pr->wan_dtype == DType::kBFloat16);
  REQUIRE(pr->wan_mixed);
  REQUIRE(pr->wan_staleness == 7);
  REQUIRE(pr->hfa_k2 == 3);
  for (size_t len = 0; len < pb.size(); ++len) REQUIRE_FALSE(DecodeRule(pb.Slice(0, len)).ok());
  // A density outside 0..1 or a dtype that is not a WAN type is refused.
  p.wan_topk = 2;
  REQUIRE_FALSE(DecodeRule(EncodeRule(p)).ok());
  p.wan_topk = 0.01;
  p.wan_dtype = DType::kInt32;
  REQUIRE_FALSE(DecodeRule(EncodeRule(p)).ok());
}
