// A training program that includes nothing of geops but <geops/geops.h>:
// the example at the top of that header, compiled and linked, plus the
// checks a program can run without a cluster.
#include <geops/geops.h>

#include <cstdio>
#include <vector>

namespace {

// geops/geops.h's example worker; main() runs it only inside a cluster.
absl::Status Train(const geops::Config& config) {
  return geops::RunWorker<float>(
      config, [](geops::TierNode&, geops::KVWorker<float>& kv, bool trains) {
        std::vector<geops::Key> keys = {geops::SpreadKey(0, 2), geops::SpreadKey(1, 2)};
        std::vector<float> weights, grads(2 * 1024, 1.0f);
        if (auto s = kv.Wait(kv.Pull(keys, &weights)); !s.ok()) return s;
        return kv.Wait(kv.PushPull(keys, grads, &weights));
      });
}

}  // namespace

int main(int argc, char** argv) {
  auto config = geops::ParseConfig([](std::string_view name) -> std::optional<std::string> {
    if (name == "DMLC_ROLE") return "worker";
    if (name == "DMLC_PS_ROOT_URI") return "127.0.0.1";
    if (name == "DMLC_PS_ROOT_PORT") return "9000";
    if (name == "DMLC_NUM_SERVER" || name == "DMLC_NUM_WORKER") return "1";
    return std::nullopt;
  });
  if (!config.ok()) return 1;
  if (argc > 1) return Train(*config).ok() ? 0 : 1;
  // A request is checked and cut per key before anything is sent.
  geops::KVWorkerCore::Call call;
  call.keys = {geops::SpreadKey(1, 2), geops::SpreadKey(0, 2)};
  call.dtype = geops::DType::kFloat32;
  call.flags = geops::msgflag::kPush;
  call.values = geops::Buffer::Allocate(8 * sizeof(float));
  if (geops::KVWorkerCore::Prepare(call).ok()) return 1;
  std::swap(call.keys[0], call.keys[1]);
  call.lens = {3, 5};
  auto p = geops::KVWorkerCore::Prepare(call);
  if (!p.ok() || p->values.size() != 2 || p->values[1].size() != 5 * sizeof(float)) return 1;
  std::puts("umbrella ok");
  return 0;
}
