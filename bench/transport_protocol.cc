#include "bench/transport_protocol.h"

#include <cstring>

namespace geops::bench {

Protocol::Protocol(int self, int peer) : self_(self), peer_(peer) {
  Key k = 0;
  key_ = Buffer::CopyOf(&k, sizeof(k));
}

Message Protocol::Data(uint32_t flags, int32_t seq) const {
  Message m;
  m.header.command = Command::kData;
  m.header.sender = self_;
  m.header.recipient = peer_;
  m.header.flags = flags;
  m.header.timestamp = seq;
  m.header.key_count = 1;
  m.segments.push_back(key_);
  return m;
}

Message Protocol::Hello(const NodeInfo& self) const {
  Message m;
  m.header.command = Command::kRegister;
  m.header.sender = self_;
  m.header.recipient = peer_;
  m.segments.push_back(EncodeNodeInfo(self));
  return m;
}

Message Protocol::Stream(const Buffer& payload, int32_t seq, uint64_t ack_every) const {
  Message m = Data(msgflag::kRequest | msgflag::kPush, seq);
  m.header.round = ack_every;
  // float32 only because the codec wants a dtype for values; any 4-byte
  // type would do, the bytes are never interpreted.
  m.header.dtype = DType::kFloat32;
  m.segments.push_back(payload);
  return m;
}

Message Protocol::Ack(int32_t seq) const { return Data(0, seq); }

Message Protocol::Ping(const Buffer& payload, int32_t seq) const {
  Message m = Data(msgflag::kRequest | msgflag::kPush | msgflag::kPull, seq);
  m.header.dtype = DType::kFloat32;
  m.segments.push_back(payload);
  return m;
}

Message Protocol::Pong(const Message& ping) const {
  Message m = Data(msgflag::kPull, ping.header.timestamp);
  m.header.dtype = ping.header.dtype;
  if (ping.segments.size() > 1) m.segments.push_back(ping.segments[1]);
  return m;
}

Message Protocol::Bye() const {
  Message m;
  m.header.command = Command::kExit;
  m.header.sender = self_;
  m.header.recipient = peer_;
  return m;
}

Message Protocol::ByeAck() const {
  Message m = Bye();
  m.header.command = Command::kShutdown;
  return m;
}

Kind Protocol::Classify(const Message& m) {
  const Header& h = m.header;
  switch (h.command) {
    case Command::kRegister: return m.segments.size() == 1 ? Kind::kHello : Kind::kOther;
    case Command::kExit: return Kind::kBye;
    case Command::kShutdown: return Kind::kByeAck;
    case Command::kData: break;
    default: return Kind::kOther;
  }
  const bool request = h.flags & msgflag::kRequest;
  const bool pull = h.flags & msgflag::kPull;
  if (request) {
    if (m.segments.size() != 2) return Kind::kOther;
    return pull ? Kind::kPing : Kind::kStream;
  }
  if (pull) return Kind::kPong;
  return m.segments.size() == 1 ? Kind::kAck : Kind::kOther;
}

}  // namespace geops::bench
