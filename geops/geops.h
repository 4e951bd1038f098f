// geops/geops.h: the whole C++ API of geops for a training program, in the
// order a program meets it. Build against the installed library with
// find_package(geops) and target_link_libraries(... geops::geops).
//
//   #include <geops/geops.h>
//
//   int main() {
//     auto config = geops::ParseConfig(geops::ProcessEnv());  // DMLC_ROLE=worker, ...
//     if (!config.ok()) return 2;                             // the message names the variable
//     absl::Status s = geops::RunWorker<float>(
//         *config, [](geops::TierNode&, geops::KVWorker<float>& kv, bool trains) {
//           std::vector<geops::Key> keys = {geops::SpreadKey(0, 2), geops::SpreadKey(1, 2)};
//           std::vector<float> weights, grads(2 * 1024, 1.0f);
//           if (auto s = kv.Wait(kv.Pull(keys, &weights)); !s.ok()) return s;  // round 0
//           return kv.Wait(kv.PushPull(keys, grads, &weights));             // one round
//         });
//     return s.ok() ? 0 : 1;
//   }
//
// The schedulers and servers of a cluster are the `geops` executable
// (DMLC_ROLE=scheduler / server); geops-launch starts a whole local cluster
// around a worker command. Every call reports errors as absl::Status; none
// throws, and none ends the process.
#pragma once

// 1. Configuration. Config is the DMLC_* / GEOPS_* environment, parsed and
//    checked once: ParseConfig(ProcessEnv()) (or any EnvLookup, e.g. a map
//    in a test); an error names the variable and what it expects.
//    ConfigHelp() lists every variable.
#include "core/base/config.h"

// 2. A worker's life. WorkerNode::Create(config), then Start() (registers
//    with the party's scheduler; blocks until every node has), then
//    Finalize() to leave in order, or Abort(why) to stop the whole cluster
//    naming the reason. RunWorker<Val>(config, body) does all of it around
//    `body`, and prints the process's stats line.
#include "core/node/worker_node.h"

// 3. Keys. A Key is a uint64_t; servers own equal ranges of the key space,
//    so number keys 0..n-1 through SpreadKey(i, n) to give every server a
//    share. Within one request keys are strictly increasing.
#include "core/kv/partition.h"

// 4. Moving values. KVWorker<Val> (float, double, int32_t, int64_t): Push,
//    Pull and PushPull on std::vector, zero-copy ZPush / ZPull / ZPushPull
//    and the *Into pulls on Buffer (shared, wrappable caller memory:
//    Buffer::Wrap), Register for RDMA, Wait(timestamp). Every push of a key
//    opens its next round; a pull returns the latest round's result.
//    KVWorkerCore is the same with the dtype chosen at run time.
#include "core/base/buffer.h"
#include "core/kv/kv_worker.h"

// 5. The master worker (DMLC_ROLE_MASTER_WORKER=1). Init(keys, values)
//    sets every key's round 0; SetRule(RuleSpec) picks the update rule the
//    servers apply (sum, sgd, average) and, through WithWanPolicy, the WAN
//    policy of the master worker's GEOPS_WAN_* variables for the whole
//    cluster.
#include "core/node/wan_policy.h"
#include "core/wire/control.h"

// 6. A server, embedded. The geops executable's server role is
//    ServerNode::Create(config, MakeTierOptions(config, false, Role::kServer),
//    the global tier's options when config.in_global_tier()) then Run(report):
//    it serves until every worker has left, or the first failure.
#include "core/node/server_node.h"
