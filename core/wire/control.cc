#include "core/wire/control.h"

#include <cmath>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"

namespace geops {
namespace {

class Writer {
 public:
  template <typename T>
  void Pod(T v) {
    const auto* p = reinterpret_cast<const std::byte*>(&v);
    bytes_.insert(bytes_.end(), p, p + sizeof(T));
  }
  void Str(const std::string& s) {
    Pod<uint32_t>(static_cast<uint32_t>(s.size()));
    const auto* p = reinterpret_cast<const std::byte*>(s.data());
    bytes_.insert(bytes_.end(), p, p + s.size());
  }
  Buffer Done() const { return Buffer::CopyOf(bytes_.data(), bytes_.size()); }

 private:
  std::vector<std::byte> bytes_;
};

class Reader {
 public:
  explicit Reader(const Buffer& b) : p_(b.data()), left_(b.size()) {}
  template <typename T>
  bool Pod(T* v) {
    if (left_ < sizeof(T)) return false;
    std::memcpy(v, p_, sizeof(T));
    p_ += sizeof(T);
    left_ -= sizeof(T);
    return true;
  }
  bool Str(std::string* s) {
    uint32_t n = 0;
    if (!Pod(&n) || n > left_ || n > 4096) return false;
    s->assign(reinterpret_cast<const char*>(p_), n);
    p_ += n;
    left_ -= n;
    return true;
  }
  size_t left() const { return left_; }

 private:
  const std::byte* p_;
  size_t left_;
};

void Put(Writer& w, const NodeInfo& n) {
  w.Pod<int32_t>(n.id);
  w.Pod<uint8_t>(static_cast<uint8_t>(n.role));
  w.Pod<int32_t>(n.rank);
  w.Str(n.host);
  w.Pod<int32_t>(n.port);
  w.Str(n.party);
  w.Str(n.party_name);
  w.Pod<int32_t>(n.rank_hint);
  w.Pod<uint8_t>(n.master);
  w.Pod<uint8_t>(n.trains);
  w.Pod<uint8_t>(n.global_server);
  w.Pod<int8_t>(n.central_flag);
  w.Pod<int32_t>(n.num_all_workers);
}

absl::Status Take(Reader& r, NodeInfo* n) {
  uint8_t role = 0, master = 0, trains = 0, global_server = 0;
  if (!r.Pod(&n->id) || !r.Pod(&role) || !r.Pod(&n->rank) || !r.Str(&n->host) ||
      !r.Pod(&n->port) || !r.Str(&n->party) || !r.Str(&n->party_name) || !r.Pod(&n->rank_hint) || !r.Pod(&master) ||
      !r.Pod(&trains) || !r.Pod(&global_server) || !r.Pod(&n->central_flag) ||
      !r.Pod(&n->num_all_workers)) {
    return absl::DataLossError("malformed node record: truncated");
  }
  if (role > static_cast<uint8_t>(Role::kWorker) || master > 1 || trains > 1 ||
      global_server > 1 || n->central_flag < -1 || n->central_flag > 1 ||
      n->num_all_workers < 0) {
    return absl::DataLossError("malformed node record: bad enum");
  }
  n->global_server = global_server;
  if (n->port < 0 || n->port > 65535) return absl::DataLossError("malformed node record: port");
  n->role = static_cast<Role>(role);
  n->master = master;
  n->trains = trains;
  return absl::OkStatus();
}

}  // namespace

std::string NodeInfo::Address() const { return absl::StrFormat("%s:%d", host, port); }

std::string NodeInfo::DebugString() const {
  return absl::StrFormat("id=%d %s rank=%d addr=%s%s%s", id, RoleName(role), rank,
                         Address(), master ? " master" : "",
                         party.empty() ? "" : " party=" + party);
}

Buffer EncodeNodeInfo(const NodeInfo& n) {
  Writer w;
  Put(w, n);
  return w.Done();
}

absl::StatusOr<NodeInfo> DecodeNodeInfo(const Buffer& b) {
  Reader r(b);
  NodeInfo n;
  if (auto s = Take(r, &n); !s.ok()) return s;
  if (r.left() != 0) return absl::DataLossError("malformed node record: trailing bytes");
  return n;
}

Buffer EncodeNodeTable(const std::vector<NodeInfo>& nodes) {
  Writer w;
  w.Pod<uint32_t>(static_cast<uint32_t>(nodes.size()));
  for (const auto& n : nodes) Put(w, n);
  return w.Done();
}

absl::StatusOr<std::vector<NodeInfo>> DecodeNodeTable(const Buffer& b) {
  Reader r(b);
  uint32_t count = 0;
  if (!r.Pod(&count) || count > (1u << 20)) return absl::DataLossError("malformed node table");
  std::vector<NodeInfo> out;
  for (uint32_t i = 0; i < count; ++i) {
    NodeInfo n;
    if (auto s = Take(r, &n); !s.ok()) return s;
    out.push_back(std::move(n));
  }
  if (r.left() != 0) return absl::DataLossError("malformed node table: trailing bytes");
  return out;
}

Buffer EncodeU32(uint32_t v) { return Buffer::CopyOf(&v, sizeof(v)); }

absl::StatusOr<uint32_t> DecodeU32(const Buffer& b) {
  uint32_t v = 0;
  if (b.size() != sizeof(v)) return absl::DataLossError("malformed u32 body");
  std::memcpy(&v, b.data(), sizeof(v));
  return v;
}

Buffer EncodeText(const std::string& s) { return Buffer::CopyOf(s.data(), s.size()); }
std::string DecodeText(const Buffer& b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

Buffer EncodeRule(const RuleSpec& r) {
  Writer w;
  w.Pod<uint8_t>(static_cast<uint8_t>(r.rule));
  w.Pod<double>(r.learning_rate);
  w.Pod<uint32_t>(r.average_over);
  w.Pod<uint8_t>(r.policy_set ? 1 : 0);
  w.Pod<double>(r.wan_topk);
  w.Pod<uint64_t>(r.wan_topk_min_elems);
  w.Pod<uint8_t>(static_cast<uint8_t>(r.wan_dtype));
  w.Pod<uint8_t>(r.wan_mixed ? 1 : 0);
  w.Pod<uint32_t>(r.wan_staleness);
  w.Pod<uint32_t>(r.hfa_k2);
  return w.Done();
}

absl::StatusOr<RuleSpec> DecodeRule(const Buffer& b) {
  Reader r(b);
  uint8_t rule = 0;
  RuleSpec out;
  uint8_t policy_set = 0, dtype = 0, mixed = 0;
  if (!r.Pod(&rule) || !r.Pod(&out.learning_rate) || !r.Pod(&out.average_over) ||
      !r.Pod(&policy_set) || !r.Pod(&out.wan_topk) || !r.Pod(&out.wan_topk_min_elems) ||
      !r.Pod(&dtype) || !r.Pod(&mixed) || !r.Pod(&out.wan_staleness) || !r.Pod(&out.hfa_k2) ||
      r.left() != 0 || rule > static_cast<uint8_t>(UpdateRule::kAverage) ||
      !std::isfinite(out.learning_rate) || policy_set > 1 || mixed > 1 ||
      !(out.wan_topk >= 0 && out.wan_topk <= 1) ||
      (dtype != static_cast<uint8_t>(DType::kNone) &&
       dtype != static_cast<uint8_t>(DType::kFloat16) &&
       dtype != static_cast<uint8_t>(DType::kBFloat16))) {
    return absl::DataLossError("malformed update rule");
  }
  out.rule = static_cast<UpdateRule>(rule);
  out.policy_set = policy_set;
  out.wan_dtype = static_cast<DType>(dtype);
  out.wan_mixed = mixed;
  return out;
}

}  // namespace geops
