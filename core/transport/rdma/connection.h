// One rdma_cm connection (an RC queue pair), what waits to be posted on
// it, and what rdma_cm carries for it: the secret in the connect's private
// data, the refusal that names it. The event handling itself (connect,
// retry until a deadline, accept, disconnect) is RdmaTransport's, in cm.cc;
// posting is in post.cc.
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/wire/message.h"
#include "core/transport/rdma/frames.h"
#include "core/transport/rdma/rendezvous.h"
#include "core/transport/rdma/verbs_raii.h"

namespace geops::rdma {

// A message on its way out, with what the one-sided path needs (frames.h).
struct OutMessage {
  Message msg;
  std::vector<Advert> adverts;  // Places::adverts
  std::vector<Advert> place;    // Places::place
};

// What waits in a connection's backlog: a message, the writes of a
// rendezvous, or a control frame (a CTS).
using Outgoing = std::variant<OutMessage, std::shared_ptr<WriteJob>, Buffer>;

struct Conn {
  enum class State { kConnecting, kUp, kDown };

  // Constant after creation.
  bool outgoing = false;
  int peer = -1;  // outgoing only
  std::string host;
  int port = 0;
  absl::Time deadline;

  absl::Mutex mu;  // guards posting on the queue pair and everything below
  // Replaced only on the cm thread, under mu (a retry makes a new one); the
  // cm thread reads it without mu, others read it under mu.
  rdma::CmIdPtr id;
  State state ABSL_GUARDED_BY(mu) = State::kConnecting;
  absl::Time retry_at ABSL_GUARDED_BY(mu) = absl::InfiniteFuture();
  int attempts ABSL_GUARDED_BY(mu) = 0;
  std::string error ABSL_GUARDED_BY(mu);
  std::deque<Outgoing> backlog ABSL_GUARDED_BY(mu);
  int sq_used ABSL_GUARDED_BY(mu) = 0;
  uint64_t next_seq ABSL_GUARDED_BY(mu) = 0;
  int unsignaled ABSL_GUARDED_BY(mu) = 0;
  // Resources of posted work requests, released when a signalled request
  // at or after their sequence number completes.
  std::deque<std::pair<uint64_t, std::vector<Buffer>>> held ABSL_GUARDED_BY(mu);
};

// A queue pair is one connection: its number is the message's origin.
inline uint64_t OriginOfQp(uint32_t qp_num) { return (uint64_t{1} << 32) | qp_num; }

// rdma_cm private data: what a connect carries, whether an incoming one
// carries `secret`, and whether a rejection was for the lack of it.
std::string ConnectPrivateData(const std::string& secret);
bool SecretMatches(const void* data, size_t len, const std::string& secret);
std::string SecretRefusal();
bool RefusedForSecret(const void* data, size_t len);

absl::StatusOr<sockaddr_in> Resolve(const std::string& host, int port);

}  // namespace geops::rdma
