// KVServer: turns a tier's incoming data messages into KVRequests for a
// handler and sends the responses. What a server does with a request (sum,
// forward, apply a rule) is the handler's policy; see core/kv/aggregator.h.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/cluster/tier_node.h"
#include "core/wire/control.h"
#include "core/wire/message.h"

namespace geops {

class KVServer;

struct KVRequest {
  KVServer* via = nullptr;   // where the response goes
  int sender = 0;
  int timestamp = 0;
  uint32_t flags = 0;
  uint64_t round = 0;
  DType dtype = DType::kNone;
  std::vector<Key> keys;
  std::vector<Buffer> values;  // one per key, or empty for a pull

  bool push() const { return flags & msgflag::kPush; }
  bool pull() const { return flags & msgflag::kPull; }
  bool init() const { return flags & msgflag::kInit; }
};

class KVServer {
 public:
  using Handler = std::function<void(KVRequest&&)>;
  using RuleHandler = std::function<absl::Status(const RuleSpec&)>;

  // What a STATS request is answered with: key=value pairs separated by
  // spaces (by default this tier's transport counters, Tier::StatsText).
  using StatsHandler = std::function<std::string()>;

  // Installs itself as `tier`'s data handler; create before tier.Start().
  KVServer(TierNode& tier, Handler handler, RuleHandler rule_handler);
  // A process in two tiers answers with both tiers' counters.
  void set_stats_handler(StatsHandler h) { stats_handler_ = std::move(h); }
  // Answers GET_RULE: the rule (and WAN policy) in force here.
  using RuleGetter = std::function<RuleSpec()>;
  void set_rule_getter(RuleGetter g) { rule_getter_ = std::move(g); }

  // Answers `req`; `values` holds one Buffer per key of a pull (views are
  // sent as they are, without copying), or is empty for a bare push ack.
  void Respond(const KVRequest& req, std::vector<Buffer> values, DType dtype);
  void RespondError(const KVRequest& req, const std::string& text);

  TierNode& tier() { return tier_; }

 private:
  void OnMessage(Message&& msg);
  void AnswerControl(const Header& h, absl::Status status, Buffer body);

  TierNode& tier_;
  Handler handler_;
  RuleHandler rule_handler_;
  StatsHandler stats_handler_;
  RuleGetter rule_getter_;
};

}  // namespace geops
