#include "core/transport/curve.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include <cstring>
#include <vector>

#include "absl/strings/str_format.h"
#include "core/base/log.h"

namespace geops {

absl::Status WriteCurveKeyFile(const std::string& path) {
  if (!zmq_has("curve")) {
    return absl::UnimplementedError("this libzmq was built without CURVE (libsodium)");
  }
  char pub[41], sec[41];
  if (zmq_curve_keypair(pub, sec) != 0) {
    return absl::InternalError(absl::StrFormat("zmq_curve_keypair: %s", zmq_strerror(zmq_errno())));
  }
  // O_EXCL: regenerating over a cluster's key would lock its nodes out.
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::FailedPreconditionError(
        absl::StrFormat("cannot create %s: %s", path, std::strerror(errno)));
  }
  std::string text = absl::StrFormat(
      "# geops cluster key (ZeroMQ CURVE). Every process of the tier needs this file;\n"
      "# keep it secret: whoever holds it can join the tier.\npublic=%s\nsecret=%s\n",
      pub, sec);
  bool ok = write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  close(fd);
  if (!ok) return absl::InternalError(absl::StrFormat("cannot write %s", path));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ZapHandler>> ZapHandler::Start(void* context,
                                                               const CurveKeys& keys) {
  if (!zmq_has("curve")) {
    return absl::UnimplementedError("CURVE keys given, but this libzmq has no CURVE (libsodium)");
  }
  std::string bin(32, '\0');
  if (zmq_z85_decode(reinterpret_cast<uint8_t*>(bin.data()), keys.public_key.c_str()) == nullptr) {
    return absl::InvalidArgumentError("the cluster public key is not valid Z85");
  }
  void* sock = zmq_socket(context, ZMQ_REP);
  if (sock == nullptr || zmq_bind(sock, "inproc://zeromq.zap.01") != 0) {
    if (sock) zmq_close(sock);
    return absl::InternalError(
        absl::StrFormat("cannot start the ZAP handler: %s", zmq_strerror(zmq_errno())));
  }
  return std::unique_ptr<ZapHandler>(new ZapHandler(sock, std::move(bin)));
}

ZapHandler::ZapHandler(void* socket, std::string public_key_bin)
    : socket_(socket), public_key_(std::move(public_key_bin)), thread_([this] { Run(); }) {}

ZapHandler::~ZapHandler() {
  stop_.store(true);
  thread_.join();
  zmq_close(socket_);
}

void ZapHandler::Run() {
  // ZAP 1.0 (RFC 27): version, request id, domain, address, identity,
  // mechanism, credentials... in; version, request id, status code, status
  // text, user id, metadata out.
  while (!stop_.load()) {
    zmq_pollitem_t item{socket_, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, 50) <= 0) continue;
    std::vector<std::string> frames;
    int more = 1;
    while (more) {
      zmq_msg_t m;
      zmq_msg_init(&m);
      if (zmq_msg_recv(&m, socket_, 0) < 0) {
        zmq_msg_close(&m);
        break;
      }
      frames.emplace_back(static_cast<char*>(zmq_msg_data(&m)), zmq_msg_size(&m));
      more = zmq_msg_more(&m);
      zmq_msg_close(&m);
    }
    if (frames.size() < 6) continue;  // not a ZAP request: REP resets on the next one
    const std::string& address = frames[3];
    const std::string& mechanism = frames[5];
    bool ok = frames[0] == "1.0" && mechanism == "CURVE" && frames.size() >= 7 &&
              frames[6] == public_key_;
    if (!ok) {
      uint64_t n = refused_.fetch_add(1) + 1;
      if (n <= 20 || n % 1000 == 0) {
        log::Warn("tcp: refused a connection from %s: its CURVE key is not this tier's cluster "
                  "key (%d refused so far)",
                  address, n);
      }
    }
    const std::string reply[6] = {"1.0", frames[1], ok ? "200" : "400",
                                  ok ? "OK" : "not the cluster key", "", ""};
    for (int i = 0; i < 6; ++i) {
      zmq_send(socket_, reply[i].data(), reply[i].size(), i < 5 ? ZMQ_SNDMORE : 0);
    }
  }
}

}  // namespace geops
