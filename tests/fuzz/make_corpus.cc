// Writes the seed corpus of geops_codec_fuzz: valid encodings of every kind
// of input the fuzz target parses, so the fuzzer starts past the magic,
// version and length checks.
//   geops_codec_corpus DIR
// deploy/checks.sh runs it before every fuzz run (so the seeds follow the
// current wire format) next to the checked-in tests/fuzz/corpus/, which was
// made by it and is refreshed with
//   geops_codec_corpus tests/fuzz/corpus
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "core/wire/codec.h"
#include "core/kv/sparse.h"
#include "core/wire/control.h"

namespace {

using namespace geops;

std::string g_dir;
int g_written = 0;

void Write(const std::string& name, const std::vector<std::byte>& bytes) {
  std::ofstream f(g_dir + "/" + name, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!f) {
    std::fprintf(stderr, "cannot write %s/%s\n", g_dir.c_str(), name.c_str());
    std::exit(1);
  }
  ++g_written;
}

std::vector<std::byte> Bytes(const Buffer& b) { return {b.data(), b.data() + b.size()}; }

template <typename T>
Buffer Of(const std::vector<T>& v) {
  return Buffer::CopyOf(v.data(), v.size() * sizeof(T));
}

// A message as the fuzz target reads it twice: flat (header and segments
// back to back) and multipart (one byte giving the header length in 8-byte
// words, the header, then the segments).
void WriteMessage(const std::string& name, const Message& m) {
  Write(name + ".flat", Bytes(wire::EncodeFlat(m)));
  Buffer header = wire::EncodeHeader(m);
  std::vector<std::byte> multi;
  multi.push_back(static_cast<std::byte>(header.size() / 8));
  multi.insert(multi.end(), header.data(), header.data() + header.size());
  for (const auto& s : m.segments) multi.insert(multi.end(), s.data(), s.data() + s.size());
  Write(name + ".multi", multi);
}

Message Control(Command c, std::vector<Buffer> segments = {}) {
  Message m;
  m.header.command = c;
  m.header.sender = 9;
  m.header.recipient = kSchedulerId;
  m.header.flags = msgflag::kRequest;
  m.segments = std::move(segments);
  return m;
}

Message Data(uint32_t flags, DType dtype, std::vector<Key> keys, std::vector<Buffer> values) {
  Message m;
  m.header.command = Command::kData;
  m.header.sender = 9;
  m.header.recipient = 8;
  m.header.flags = flags;
  m.header.timestamp = 42;
  m.header.round = 3;
  m.header.dtype = dtype;
  m.header.key_count = static_cast<uint32_t>(keys.size());
  m.segments.push_back(Of(keys));
  for (auto& v : values) m.segments.push_back(std::move(v));
  return m;
}

NodeInfo Node(int32_t id, Role role, int32_t rank, int32_t port) {
  NodeInfo n;
  n.id = id;
  n.role = role;
  n.rank = rank;
  n.host = "127.0.0.1";
  n.port = port;
  n.party = "10.1.1.29:9094";
  n.party_name = "A";
  return n;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  g_dir = argv[1];
  using namespace geops::msgflag;

  // Control bodies on their own (the target also parses the whole input as
  // each of them).
  NodeInfo worker = Node(9, Role::kWorker, 0, 40001);
  worker.master = true;
  NodeInfo server = Node(8, Role::kServer, 0, 40002);
  server.global_server = true;
  server.rank_hint = 0;
  server.central_flag = 1;
  server.num_all_workers = 4;
  std::vector<NodeInfo> table = {Node(kSchedulerId, Role::kScheduler, 0, 40000), server,
                                 worker, Node(11, Role::kWorker, 1, 40003)};
  Write("nodeinfo-worker", Bytes(EncodeNodeInfo(worker)));
  Write("nodeinfo-server", Bytes(EncodeNodeInfo(server)));
  Write("nodetable-1", Bytes(EncodeNodeTable({table[0]})));
  Write("nodetable-4", Bytes(EncodeNodeTable(table)));
  Write("u32", Bytes(EncodeU32(group::kAll)));
  Write("rule-sum", Bytes(EncodeRule({UpdateRule::kSum, 0})));
  Write("rule-sgd", Bytes(EncodeRule({UpdateRule::kSgd, 0.25})));
  Write("rule-average", Bytes(EncodeRule({UpdateRule::kAverage, 0, 4})));
  // Compressed values: dense fp16, and top-k (float32, accumulate).
  std::vector<float> grad(64);
  for (size_t i = 0; i < grad.size(); ++i) grad[i] = static_cast<float>(i % 7) - 3.0f;
  Write("sparse-dense-fp16", Bytes(EncodeDense(Of<float>(grad), DType::kFloat16, false)));
  ErrorFeedback ef(0.1, DType::kFloat32);
  Write("sparse-topk", Bytes(ef.Compress(1, Of<float>(grad), true)));

  // Membership messages, as the tiers send them.
  WriteMessage("register", Control(Command::kRegister, {EncodeNodeInfo(worker)}));
  WriteMessage("register-ack", Control(Command::kRegisterAck));
  WriteMessage("node-table", Control(Command::kNodeTable, {EncodeNodeTable(table)}));
  WriteMessage("barrier", Control(Command::kBarrier, {EncodeU32(group::kWorkers)}));
  WriteMessage("barrier-done", Control(Command::kBarrierDone));
  WriteMessage("heartbeat", Control(Command::kHeartbeat));
  WriteMessage("exit", Control(Command::kExit));
  WriteMessage("abort", Control(Command::kAbort, {EncodeText("node 11 has been silent")}));
  WriteMessage("set-rule", Control(Command::kSetRule, {EncodeRule({UpdateRule::kSgd, 0.5})}));
  WriteMessage("stats", Control(Command::kStats, {EncodeText("local_sent_bytes=1")}));

  // Key-value traffic: pushes, pulls, responses, every dtype, an error.
  WriteMessage("push-f32", Data(kRequest | kPush, DType::kFloat32, {1, 7},
                                {Of<float>({1.5f, -2}), Of<float>({3, 4, 5})}));
  WriteMessage("init-f64", Data(kRequest | kPush | kInit, DType::kFloat64, {0},
                                {Of<double>({0.125, 8})}));
  WriteMessage("pushpull-i32", Data(kRequest | kPush | kPull, DType::kInt32, {5},
                                    {Of<int32_t>({-1, 2, 3})}));
  WriteMessage("pull", Data(kRequest | kPull, DType::kInt64, {2, 3, 4}, {}));
  WriteMessage("pull-response-i64", Data(kPull, DType::kInt64, {2},
                                         {Of<int64_t>({1ll << 40, -5})}));
  Message error;
  error.header.command = Command::kData;
  error.header.flags = kPush;
  error.segments.push_back(EncodeText("dtype mismatch for key 7"));
  WriteMessage("error-response", error);

  std::printf("%d seeds written to %s\n", g_written, g_dir.c_str());
  return 0;
}
