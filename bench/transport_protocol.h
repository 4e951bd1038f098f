// The conversation of geops-bench-transport, in Messages the codec accepts.
//
// The Transport interface has no reply path: a peer can only send to ids it
// has Connect()ed. So the client listens too and its first message (HELLO, a
// REGISTER whose body is its NodeInfo) tells the server where to connect
// back. After that:
//   STREAM  data push, round = ack interval; the server acks every
//           `round`-th message with ACK (a bodiless response, timestamp =
//           the sequence number it has reached). That ack is the flow
//           control: the client keeps at most `window` messages unacked.
//   PING    data push+pull; the server answers PONG with the same payload.
//   BYE     EXIT; the server answers SHUTDOWN once everything before it has
//           been received, then both may close.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "core/base/buffer.h"
#include "core/wire/control.h"
#include "core/wire/message.h"

namespace geops::bench {

inline constexpr int kServerNodeId = 1;
inline constexpr int kClientNodeId = 2;

enum class Kind { kHello, kStream, kAck, kPing, kPong, kBye, kByeAck, kOther };

// Sender, recipient and the one-key segment are fixed per direction; only
// the payload and the counters change between messages.
class Protocol {
 public:
  Protocol(int self, int peer);

  Message Hello(const NodeInfo& self) const;
  Message Stream(const Buffer& payload, int32_t seq, uint64_t ack_every) const;
  Message Ack(int32_t seq) const;
  Message Ping(const Buffer& payload, int32_t seq) const;
  // Echoes the received payload back without copying it.
  Message Pong(const Message& ping) const;
  Message Bye() const;
  Message ByeAck() const;

  static Kind Classify(const Message& m);

 private:
  Message Data(uint32_t flags, int32_t seq) const;

  int self_;
  int peer_;
  Buffer key_;  // segment 0 of every data message: one 8-byte key
};

}  // namespace geops::bench
