// KVClient: the untyped request engine under KVWorker. It splits a request
// over the servers that own its keys (one message per server and round),
// matches responses by timestamp, and completes each request once, with
// per-key result Buffers that are views of the received frames.
//
// Keys of at least TierNode::slice_elems() elements bound for global servers
// travel as one slice per server (msgflag::kSlice), views of the caller's
// value; the slices of a result are put together in the destination (or a
// buffer of the client's), a copy counted in bytes_copied(). An init also
// gives the key's owner the whole value, which later pulls of unknown size
// (round 0) read.
//
// When the tier asks for it (TierNode::resend_after), a thread of its own
// resends every unanswered message whose connection broke after it was
// sent (Transport::Disconnects), within that long of the break, and a
// second answer to a message is dropped: with servers that ignore
// duplicate contributions, a connection reset mid-round loses and doubles
// nothing. A slow answer alone never causes a resend: on a WAN a round's
// answer may take many seconds, and resending would only crowd the link.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <span>
#include <tuple>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "core/base/buffer.h"
#include "core/cluster/tier_node.h"
#include "core/wire/control.h"
#include "core/wire/message.h"

namespace geops {

class KVClient {
 public:
  // Runs on the receive thread when a request completes; `values` holds one
  // Buffer per requested key for pulls (empty otherwise).
  using Completion = std::function<void(const absl::Status&, std::vector<Buffer>& values)>;

  // Installs itself as `tier`'s data handler; create before tier.Start().
  explicit KVClient(TierNode& tier);
  ~KVClient();
  KVClient(const KVClient&) = delete;
  KVClient& operator=(const KVClient&) = delete;

  struct Request {
    std::span<const Key> keys;        // strictly increasing
    std::vector<Buffer> values;       // one per key, or empty for a pull
    std::span<const uint64_t> rounds; // one per key
    DType dtype = DType::kNone;
    uint32_t flags = 0;               // msgflag::kPush / kPull / kInit
    // Optional, one per key: where pulled values must end up. The transport
    // writes them there directly when it can (rdma); otherwise they are
    // copied on arrival and counted in bytes_copied().
    std::vector<Buffer> destinations;
    // Nobody will Wait() for it: forgotten as soon as its completion ran.
    bool detached = false;
  };

  // Sends `req`; returns its timestamp. Errors (bad keys, a dead tier)
  // surface from Wait() and the completion, never as exceptions.
  int Submit(Request req, Completion done = nullptr);

  // A request that fails at once with `status` (for callers that find a
  // problem before anything is sent).
  int Reject(absl::Status status, Completion done = nullptr);

  // Sends the update rule to every server of the tier.
  int SetRule(const RuleSpec& rule, Completion done = nullptr);
  // Asks every server of the tier for its counters: the completion gets
  // one text Buffer per server, in rank order (see KVServer::StatsHandler).
  int QueryStats(Completion done);
  // Asks every server of the tier for its rule and WAN policy: one
  // EncodeRule Buffer per server, in rank order.
  int QueryRule(Completion done);

  // Prepares `buf` for zero-copy transfer (RDMA registration); a no-op on tcp.
  absl::Status Register(const Buffer& buf) { return tier_.transport().Register(buf); }
  // Pulled bytes this client had to copy into caller destinations.
  uint64_t bytes_copied() const { return bytes_copied_.load(); }

  // Blocks until request `ts` completes and returns its status.
  absl::Status Wait(int ts);

  // Fails every outstanding and future request with `status`.
  void Fail(const absl::Status& status);

  TierNode& tier() { return tier_; }
  // Messages sent again because no answer came in time, and answers that
  // came twice (dropped).
  uint64_t resent() const { return resent_.load(); }
  uint64_t duplicate_answers() const { return duplicates_.load(); }

 private:
  // One message of a request, kept for a resend until it is answered.
  struct Sent {
    Message msg;
    uint64_t disconnects = 0;  // of its connection, when it was (re)sent
    bool answered = false;
  };
  struct Pending {
    int outstanding = 0;
    absl::Status status;
    std::vector<Key> keys;
    std::vector<Buffer> values;
    std::vector<Buffer> destinations;
    // Per key: its bytes when it travels sliced, else 0; and the servers a
    // slice answer can come from, in rank order.
    std::vector<size_t> sliced;
    std::vector<int32_t> servers;
    DType dtype = DType::kNone;
    bool detached = false;
    Command command = Command::kData;  // of the request, and of its answers
    Completion done;
    bool completing = false;  // the completion is running or has run
    bool finished = false;    // Wait() may return
    // By (server id, round, sliced): every message of the request (resend only).
    std::map<std::tuple<int, uint64_t, bool>, Sent> sent;
  };

  void OnMessage(Message&& msg);
  // Places one server's slice of key `at` of request `p`; false (and p's
  // status set) when it does not fit.
  bool PlaceSlice(Pending& p, size_t at, int server, Buffer& got);
  // Whether this tier's servers take big keys as slices.
  bool Slices(const std::vector<NodeInfo>& servers) const;
  // One control request (SET_RULE, STATS) to every server of the tier.
  int ToEveryServer(Command command, Buffer body, Completion done);
  // Sends `m` for request `ts`, keeping a copy when resends are on.
  absl::Status SendTracked(int ts, Message m);
  void ResendLoop(absl::Duration after);
  void StopResender();
  int Begin(std::vector<Key> keys, Completion done, int messages);
  void Finish(int ts, std::unique_lock<std::mutex>& lock);

  TierNode& tier_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<int, Pending> pending_;
  int next_ts_ = 1;  // wraps before INT32_MAX, skipping ids still pending
  absl::Status failed_;
  std::atomic<uint64_t> bytes_copied_{0};
  std::atomic<uint64_t> resent_{0};
  std::atomic<uint64_t> duplicates_{0};
  // Sizes of the keys this client has sent or received (guarded by mu_):
  // a later pull of the key is sliced like its push.
  std::map<Key, size_t> key_bytes_;
  bool stop_resender_ = false;  // guarded by mu_
  std::thread resender_;
};

}  // namespace geops
