#include "core/kv/aggregator.h"

#include "core/kv/global_aggregator.h"
#include "core/kv/party_aggregator.h"

namespace geops {

std::unique_ptr<Aggregator> MakeAggregator(KVClient* upstream, AggregatorOptions options) {
  if (upstream != nullptr) return std::make_unique<PartyAggregator>(*upstream, std::move(options));
  return std::make_unique<GlobalAggregator>(std::move(options));
}

}  // namespace geops
