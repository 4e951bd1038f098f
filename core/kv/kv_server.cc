#include "core/kv/kv_server.h"

#include <cstring>

#include "core/base/log.h"

namespace geops {

KVServer::KVServer(TierNode& tier, Handler handler, RuleHandler rule_handler)
    : tier_(tier), handler_(std::move(handler)), rule_handler_(std::move(rule_handler)) {
  tier_.set_data_handler([this](Message&& m) { OnMessage(std::move(m)); });
}

void KVServer::OnMessage(Message&& msg) {
  const Header& h = msg.header;
  if (!(h.flags & msgflag::kRequest)) {
    log::Warn("%s: a server got a response (%s); dropped", tier_.name(), msg.DebugString());
    return;
  }
  KVRequest req;
  req.via = this;
  req.sender = h.sender;
  req.timestamp = h.timestamp;
  req.flags = h.flags;
  req.round = h.round;
  req.dtype = h.dtype;
  if (h.command == Command::kSetRule) {
    absl::StatusOr<RuleSpec> rule =
        msg.segments.size() == 1 ? DecodeRule(msg.segments[0])
                                 : absl::StatusOr<RuleSpec>(absl::DataLossError("no rule"));
    AnswerControl(h, rule.ok() ? rule_handler_(*rule) : rule.status(), Buffer());
    return;
  }
  if (h.command == Command::kGetRule) {
    AnswerControl(h, absl::OkStatus(), EncodeRule(rule_getter_ ? rule_getter_() : RuleSpec{}));
    return;
  }
  if (h.command == Command::kStats) {
    AnswerControl(h, absl::OkStatus(),
                  EncodeText(stats_handler_ ? stats_handler_() : tier_.StatsText()));
    return;
  }
  // The codec has validated the shape: segment 0 holds key_count keys and
  // the rest, if any, one value per key.
  req.keys.resize(h.key_count);
  std::memcpy(req.keys.data(), msg.segments[0].data(), h.key_count * sizeof(Key));
  if (msg.segments.size() > 1) {
    req.values.assign(std::make_move_iterator(msg.segments.begin() + 1),
                      std::make_move_iterator(msg.segments.end()));
  }
  if ((req.push() && req.values.size() != req.keys.size()) ||
      (!req.push() && !req.values.empty()) || (req.init() && !req.push())) {
    RespondError(req, "a push (and an init) must carry one value per key and a pull none");
    return;
  }
  handler_(std::move(req));
}

void KVServer::AnswerControl(const Header& h, absl::Status status, Buffer body) {
  Message ack;
  ack.header.command = h.command;
  ack.header.recipient = h.sender;
  ack.header.timestamp = h.timestamp;
  if (!status.ok()) {
    // An error answer is a control message with one text segment, which
    // the codec accepts for any command.
    ack.header.flags = msgflag::kError;
    body = EncodeText(std::string(status.message()));
  }
  if (!body.empty()) ack.segments.push_back(std::move(body));
  if (auto st = tier_.Send(std::move(ack)); !st.ok()) {
    log::Warn("%s: cannot answer the %s request of node %d: %s", tier_.name(),
              CommandName(h.command), h.sender, st.message());
  }
}

void KVServer::Respond(const KVRequest& req, std::vector<Buffer> values, DType dtype) {
  Message m;
  m.header.command = Command::kData;
  m.header.recipient = req.sender;
  m.header.timestamp = req.timestamp;
  m.header.round = req.round;
  m.header.flags = req.flags & (msgflag::kPush | msgflag::kPull | msgflag::kInit | msgflag::kSlice |
                                msgflag::kSparse);
  m.header.dtype = dtype;
  m.header.key_count = static_cast<uint32_t>(req.keys.size());
  m.segments.push_back(Buffer::CopyOf(req.keys.data(), req.keys.size() * sizeof(Key)));
  for (auto& v : values) m.segments.push_back(std::move(v));
  if (auto s = tier_.Send(std::move(m)); !s.ok()) {
    log::Warn("%s: cannot answer node %d: %s", tier_.name(), req.sender, s.message());
  }
}

void KVServer::RespondError(const KVRequest& req, const std::string& text) {
  log::Warn("%s: request %d from node %d failed: %s", tier_.name(), req.timestamp, req.sender,
            text);
  Message m;
  m.header.command = Command::kData;
  m.header.recipient = req.sender;
  m.header.timestamp = req.timestamp;
  m.header.round = req.round;  // with the sender, names the message it answers
  // With the sender and round, the slice bit names the message it answers.
  m.header.flags = msgflag::kError | (req.flags & msgflag::kSlice);
  m.segments.push_back(EncodeText(text));
  if (auto s = tier_.Send(std::move(m)); !s.ok()) {
    log::Warn("%s: cannot answer node %d: %s", tier_.name(), req.sender, s.message());
  }
}

}  // namespace geops
