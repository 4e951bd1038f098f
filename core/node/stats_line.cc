#include "core/node/stats_line.h"

#include <sys/resource.h>

#include <cstdio>

#include "core/node/report.h"

namespace geops {
namespace {

// Peak resident memory of this process, for the bounded-memory checks.
long MaxRssKb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss;
}

}  // namespace

void PrintTierStats(const Config& c, const Tier& tier) {
  const TransportStats& s = tier.stats();
  report::TierStats r;
  r.role = c.Describe();
  r.tier = tier.name();
  r.id = tier.my_id();
  r.sent_bytes = s.bytes_sent.load();
  r.recv_bytes = s.bytes_received.load();
  r.sent_msgs = s.messages_sent.load();
  r.recv_msgs = s.messages_received.load();
  r.malformed = s.malformed.load();
  r.copied_bytes = s.bytes_copied.load();
  r.staged_bytes = s.bytes_staged.load();
  r.registrations = s.registrations.load();
  r.rejected = tier.rejected();
  r.max_rss_kb = static_cast<uint64_t>(MaxRssKb());
  std::printf("%s\n", r.Format().c_str());
  std::fflush(stdout);
}

}  // namespace geops
