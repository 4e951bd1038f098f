#include "roles/roles.h"

#include <sys/resource.h>

#include <cstdio>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/base/log.h"
#include "core/cluster/tier_node.h"
#include "core/cluster/tier_scheduler.h"
#include "core/kv/server_node.h"
#include "roles/report.h"
#include "roles/tier_setup.h"

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
  // One parsable line per tier on stdout: the launcher adds them up.
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

absl::Status RunScheduler(const Config& c) {
  bool global = c.global_role == Role::kScheduler;
  auto tier = TierScheduler::Create(MakeTierOptions(c, global, Role::kScheduler));
  if (!tier.ok()) return tier.status();
  if (auto s = (*tier)->Start(); !s.ok()) return s;
  absl::Status done = (*tier)->WaitDone();
  if (done.ok()) log::Info("%s tier: every node exited; shutting down", (*tier)->name());
  PrintTierStats(c, **tier);
  return done;
}

absl::Status RunServer(const Config& c) {
  const bool top = c.global_role != Role::kWorker;  // global server or single tier
  std::optional<TierOptions> global;
  if (c.in_global_tier()) global = MakeTierOptions(c, true, top ? Role::kServer : Role::kWorker);
  auto node = ServerNode::Create(c, MakeTierOptions(c, false, Role::kServer), std::move(global));
  if (!node.ok()) return node.status();
  const ServerNode& n = **node;
  return (*node)->Run([&c, &n] {
    PrintTierStats(c, n.local());
    if (n.global()) PrintTierStats(c, *n.global());
  });
}

}  // namespace geops
