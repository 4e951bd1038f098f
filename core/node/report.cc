#include "core/node/report.h"

#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace geops::report {
namespace {

// The key=value fields of `line` when it starts with `tag`.
std::optional<std::map<std::string, std::string, std::less<>>> Fields(std::string_view line,
                                                                      std::string_view tag) {
  if (line.size() <= tag.size() || line.substr(0, tag.size()) != tag || line[tag.size()] != ' ') {
    return std::nullopt;
  }
  std::map<std::string, std::string, std::less<>> kv;
  const std::string_view rest = line.substr(tag.size() + 1);
  for (absl::string_view f :
       absl::StrSplit(absl::string_view(rest.data(), rest.size()), ' ', absl::SkipEmpty())) {
    auto eq = f.find('=');
    if (eq != absl::string_view::npos) kv[std::string(f.substr(0, eq))] = std::string(f.substr(eq + 1));
  }
  return kv;
}

// Reads every listed field; false when one is missing or malformed.
class Reader {
 public:
  explicit Reader(const std::map<std::string, std::string, std::less<>>& kv) : kv_(kv) {}
  template <typename T>
  Reader& operator()(std::string_view key, T& out) {
    auto it = kv_.find(key);
    if (it == kv_.end()) {
      ok_ = false;
    } else if constexpr (std::is_same_v<T, std::string>) {
      out = it->second;
    } else if constexpr (std::is_same_v<T, bool>) {
      ok_ &= it->second == "0" || it->second == "1";
      out = it->second == "1";
    } else if constexpr (std::is_floating_point_v<T>) {
      ok_ &= absl::SimpleAtod(it->second, &out);
    } else {
      ok_ &= absl::SimpleAtoi(it->second, &out);
    }
    return *this;
  }
  bool ok() const { return ok_; }

 private:
  const std::map<std::string, std::string, std::less<>>& kv_;
  bool ok_ = true;
};

}  // namespace

std::string TierStats::Format() const {
  return absl::StrFormat(
      "%s role=%s tier=%s id=%d sent_bytes=%d recv_bytes=%d sent_msgs=%d recv_msgs=%d "
      "malformed=%d copied_bytes=%d staged_bytes=%d registrations=%d rejected=%d max_rss_kb=%d",
      kTag, role, tier, id, sent_bytes, recv_bytes, sent_msgs, recv_msgs, malformed,
      copied_bytes, staged_bytes, registrations, rejected, max_rss_kb);
}

std::optional<TierStats> TierStats::Parse(std::string_view line) {
  auto kv = Fields(line, kTag);
  if (!kv) return std::nullopt;
  TierStats s;
  Reader r(*kv);
  r("role", s.role)("tier", s.tier)("id", s.id)("sent_bytes", s.sent_bytes)(
      "recv_bytes", s.recv_bytes)("sent_msgs", s.sent_msgs)("recv_msgs", s.recv_msgs)(
      "malformed", s.malformed)("copied_bytes", s.copied_bytes)("staged_bytes", s.staged_bytes)(
      "registrations", s.registrations)("rejected", s.rejected)("max_rss_kb", s.max_rss_kb);
  if (!r.ok()) return std::nullopt;
  return s;
}

std::string Worker::Format() const {
  if (!trained) {
    return absl::StrFormat("%s rank=%d master=%d trained=0 keys=%d init_bytes=%d", kTag, rank,
                           master, keys, init_bytes);
  }
  return absl::StrFormat(
      "%s rank=%d master=%d trained=%d counted=%d rounds=%d keys=%d values_checked=%d "
      "mismatches=%d checksum=%016x push_bytes=%d seconds=%.3f copied_bytes=%d "
      "later_results=%d resumed_from=%d",
      kTag, rank, master, trained, counted, rounds, keys, values_checked, mismatches, checksum,
      push_bytes, seconds, copied_bytes, later_results, resumed_from);
}

std::optional<Worker> Worker::Parse(std::string_view line) {
  auto kv = Fields(line, kTag);
  if (!kv) return std::nullopt;
  Worker w;
  Reader r(*kv);
  r("rank", w.rank)("master", w.master)("trained", w.trained);
  if (!r.ok()) return std::nullopt;
  if (!w.trained) return w;  // a master worker that does not train says only that
  std::string checksum;
  r("counted", w.counted)("rounds", w.rounds)("keys", w.keys)("values_checked", w.values_checked)(
      "mismatches", w.mismatches)("checksum", checksum)("push_bytes", w.push_bytes)(
      "seconds", w.seconds)("copied_bytes", w.copied_bytes)("later_results", w.later_results)(
      "resumed_from", w.resumed_from);
  if (!r.ok() || !absl::SimpleHexAtoi(checksum, &w.checksum)) return std::nullopt;
  return w;
}

std::string Learner::Format() const {
  return absl::StrFormat(
      "%s shard=%d/%d trained=1 epochs=%d steps_per_epoch=%d rounds=%d test_accuracy=%s "
      "seconds=%.3f",
      kTag, shard, shards, epochs, steps_per_epoch, rounds,
      test_accuracy ? absl::StrFormat("%.4f", *test_accuracy) : std::string("-"), seconds);
}

std::optional<Learner> Learner::Parse(std::string_view line) {
  auto kv = Fields(line, kTag);
  if (!kv) return std::nullopt;
  Learner l;
  std::string shard, accuracy;
  Reader r(*kv);
  r("shard", shard)("epochs", l.epochs)("steps_per_epoch", l.steps_per_epoch)("rounds", l.rounds)(
      "test_accuracy", accuracy)("seconds", l.seconds);
  if (!r.ok()) return std::nullopt;
  std::vector<std::string> parts = absl::StrSplit(shard, '/');
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &l.shard) ||
      !absl::SimpleAtoi(parts[1], &l.shards)) {
    return std::nullopt;
  }
  double acc = 0;
  if (accuracy != "-") {
    if (!absl::SimpleAtod(accuracy, &acc)) return std::nullopt;
    l.test_accuracy = acc;
  }
  return l;
}

}  // namespace geops::report
