// geops-launch: runs a whole GeoMX-shaped topology on this machine and
// prints what moved and whether every worker saw the exact global result.
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/match.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_split.h"
#include "deploy/launcher.h"

namespace {

const char kUsage[] = R"(usage: geops-launch [options]

Starts a GeoMX-shaped cluster on this machine: a central party (global
scheduler, scheduler, global servers, master worker) and N training parties
(scheduler, servers, workers), runs the built-in trainer for a number of
synchronous rounds, checks every value every worker pulled, and prints a
summary. Ctrl-C, or any process failing, stops all of them.

  --parties N           training parties (default 2)
  --servers N           servers per party (default 1)
  --workers N           workers per party (default 2)
  --global-servers N    global servers (default 1)
  --central-workers N   extra training workers in the central party; implies
                        --central-training (default 0)
  --central-training    DMLC_ENABLE_CENTRAL_WORKER=1: the master worker trains
  --rounds N            synchronous rounds (default 10)
  --key-sizes A,B,...   elements per key (default 262144,262144,131072)
  --dtype T             float32 | float64 | int32 | int64 (default float32)
  --rule R              sum | sgd (default sum)
  --lr X                sgd learning rate (default 0.5; with --train 0.1)
  --train MODEL         train softmax, mlp or mlp:HIDDEN on Fashion-MNIST
                        (GEOPS_TRAIN; package dataset-fashion-mnist) instead
                        of the synthetic check, each worker on its shard;
                        prints test accuracy per epoch. Policies come from
                        --env (GEOPS_WAN_TOPK=1%, GEOPS_WAN_SYNC=mixed,
                        MXNET_KVSTORE_USE_HFA=1, ...)
  --epochs N            epochs of --train (default 3)
  --worker-cmd CMD      every worker (master included) runs CMD through
                        /bin/sh -c instead of geops, with its DMLC_*
                        environment, GEOPS_SHARD=i/N (training workers) and
                        PYTHONUNBUFFERED=1: e.g. a Python program that joins
                        with `import geops`. CMD failing stops the cluster
                        like any process; the summary says whether every
                        worker's command exited 0
  --party-hosts A,B,... one IPv4 address per party, the central party first
                        (default: all on 127.0.0.1). In the WAN lab
                        (deploy/lab), the first address of each lab party.
  --keyfile FILE        CURVE on every tcp tier with this cluster key
                        (GEOPS_GLOBAL_KEYFILE and GEOPS_LOCAL_KEYFILE; make
                        one with geops --gen-keyfile FILE)
  --env NAME=VALUE      set a variable for every process (repeatable), e.g.
                        --env GEOPS_GLOBAL_HEARTBEAT_TIMEOUT=60
  --checkpoint-dir DIR  GEOPS_CHECKPOINT_DIR: the global servers write their
                        state there and resume from it when started again
  --checkpoint-rounds N GEOPS_CHECKPOINT_ROUNDS: a checkpoint every N rounds
  --restart N           supervised: when a process dies, stop the others and
                        start the whole cluster again, up to N times; the
                        global servers resume from their newest checkpoint
                        (default directory LOG_DIR/checkpoints, every 10
                        rounds, unless given) and the trainers go on from its
                        round. Each run's logs: LOG_DIR/run-K
  --kill NAME@ROUND     inject a fault: SIGKILL the process NAME (e.g.
                        B.server0, central.global_server0, A.worker1) once a
                        worker has printed round ROUND; repeatable
  --keep-going          let every process end by itself when one fails
                        (default: stop them all), to see what each detects
  --verbose N           PS_VERBOSE for every process (default 0)
  --heartbeat-timeout S PS_HEARTBEAT_TIMEOUT (default 15)
  --timeout S           give up after S seconds (default 600)
  --log-dir DIR         per-process stderr logs (default: a new /tmp dir)
  --geops PATH          the geops executable (default: next to this one)
  --quiet               do not echo process output, only the summary
)";

void OnSignal(int) { geops::deploy::Cluster::RequestStop(); }

std::string SelfDir() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return ".";
  std::string p(buf, n);
  return p.substr(0, p.rfind('/'));
}

}  // namespace

int main(int argc, char** argv) {
  using namespace geops::deploy;
  Topology t;
  t.env["GEOPS_ROUNDS"] = "10";
  RunOptions run;
  run.binary = SelfDir() + "/geops";
  run.echo = true;
  run.timeout = absl::Seconds(600);
  std::string log_dir;
  int restarts = 0;

  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "geops-launch: %s needs a value\n%s", a.c_str(), kUsage);
        std::exit(2);
      }
      return argv[++i];
    };
    auto count = [&](int lo) {
      std::string v = value();
      int n = 0;
      if (!absl::SimpleAtoi(v, &n) || n < lo || n > 1000) {
        std::fprintf(stderr, "geops-launch: %s \"%s\": expected an integer in %d..1000\n",
                     a.c_str(), v.c_str(), lo);
        std::exit(2);
      }
      return n;
    };
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--parties") {
      t.parties = count(0);
    } else if (a == "--servers") {
      t.servers_per_party = count(1);
    } else if (a == "--workers") {
      t.workers_per_party = count(1);
    } else if (a == "--global-servers") {
      t.global_servers = count(1);
    } else if (a == "--central-workers") {
      t.central_workers = count(0);
      if (t.central_workers > 0) t.central_training = true;
    } else if (a == "--central-training") {
      t.central_training = true;
    } else if (a == "--rounds") {
      t.env["GEOPS_ROUNDS"] = value();
    } else if (a == "--key-sizes") {
      t.env["GEOPS_KEY_SIZES"] = value();
    } else if (a == "--dtype") {
      t.env["GEOPS_DTYPE"] = value();
    } else if (a == "--rule") {
      t.env["GEOPS_RULE"] = value();
    } else if (a == "--lr") {
      t.env["GEOPS_LR"] = value();
    } else if (a == "--train") {
      t.env["GEOPS_TRAIN"] = value();
    } else if (a == "--worker-cmd") {
      t.worker_cmd = value();
      if (absl::StripAsciiWhitespace(t.worker_cmd).empty()) {
        std::fprintf(stderr, "geops-launch: --worker-cmd \"%s\": expected a command\n",
                     t.worker_cmd.c_str());
        return 2;
      }
    } else if (a == "--epochs") {
      t.env["GEOPS_EPOCHS"] = value();
    } else if (a == "--party-hosts") {
      t.party_hosts = absl::StrSplit(value(), ',', absl::SkipEmpty());
    } else if (a == "--keyfile") {
      t.env["GEOPS_GLOBAL_KEYFILE"] = t.env["GEOPS_LOCAL_KEYFILE"] = value();
    } else if (a == "--checkpoint-dir") {
      t.env["GEOPS_CHECKPOINT_DIR"] = value();
    } else if (a == "--checkpoint-rounds") {
      t.env["GEOPS_CHECKPOINT_ROUNDS"] = value();
    } else if (a == "--restart") {
      restarts = count(0);
    } else if (a == "--kill") {
      std::string f = value();
      size_t at = f.rfind('@');
      int round = 0;
      if (at == std::string::npos || at == 0 || !absl::SimpleAtoi(f.substr(at + 1), &round) ||
          round < 1) {
        std::fprintf(stderr, "geops-launch: --kill \"%s\": expected NAME@ROUND (e.g. "
                     "B.server0@20)\n", f.c_str());
        return 2;
      }
      run.faults.push_back({f.substr(0, at), round});
    } else if (a == "--keep-going") {
      run.stop_on_failure = false;
    } else if (a == "--env") {
      std::string kv = value();
      size_t eq = kv.find('=');
      if (eq == std::string::npos || eq == 0) {
        std::fprintf(stderr, "geops-launch: --env \"%s\": expected NAME=VALUE\n", kv.c_str());
        return 2;
      }
      t.env[kv.substr(0, eq)] = kv.substr(eq + 1);
    } else if (a == "--verbose") {
      t.env["PS_VERBOSE"] = value();
    } else if (a == "--heartbeat-timeout") {
      t.env["PS_HEARTBEAT_TIMEOUT"] = value();
    } else if (a == "--timeout") {
      run.timeout = absl::Seconds(count(1));
    } else if (a == "--log-dir") {
      log_dir = value();
    } else if (a == "--geops") {
      run.binary = value();
    } else if (a == "--quiet") {
      run.echo = false;
    } else {
      std::fprintf(stderr, "geops-launch: unknown option %s\n%s", a.c_str(), kUsage);
      return 2;
    }
  }
  if (log_dir.empty()) {
    char tmpl[] = "/tmp/geops-launch.XXXXXX";
    if (mkdtemp(tmpl) == nullptr) {
      std::perror("mkdtemp");
      return 1;
    }
    log_dir = tmpl;
  }
  if (mkdir(log_dir.c_str(), 0755) != 0 && errno != EEXIST) {
    std::fprintf(stderr, "geops-launch: cannot create --log-dir %s: %s\n", log_dir.c_str(),
                 std::strerror(errno));
    return 2;
  }
  run.log_dir = log_dir;
  if (restarts > 0 && !t.env.count("GEOPS_CHECKPOINT_DIR")) {
    // Restarting without durable state would start the model afresh.
    t.env["GEOPS_CHECKPOINT_DIR"] = log_dir + "/checkpoints";
    if (!t.env.count("GEOPS_CHECKPOINT_ROUNDS") && !t.env.count("GEOPS_CHECKPOINT_SECONDS")) {
      t.env["GEOPS_CHECKPOINT_ROUNDS"] = "10";
    }
  }

  auto plan = Plan(t);
  if (!plan.ok()) {
    std::fprintf(stderr, "geops-launch: %s\n", std::string(plan.status().message()).c_str());
    return 2;
  }
  std::printf("geops-launch: %d processes (central party + %d parties x (%d servers, %d workers), "
              "%d global servers); logs in %s\n",
              static_cast<int>(plan->size()), t.parties, t.servers_per_party,
              t.workers_per_party, t.global_servers, log_dir.c_str());
  std::fflush(stdout);

  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  for (const Fault& f : run.faults) {
    bool known = false;
    for (const auto& p : *plan) known |= p.name == f.process;
    if (!known) {
      std::fprintf(stderr, "geops-launch: --kill %s@%d: no process of this topology is named "
                   "%s (they are named like central.global_server0, A.server0, B.worker1)\n",
                   f.process.c_str(), f.after_round, f.process.c_str());
      return 2;
    }
  }
  std::vector<Attempt> attempts = Supervise(*plan, run, restarts);
  if (attempts.back().results.empty()) return 1;
  const int restarted = static_cast<int>(attempts.size()) - 1;
  auto results = attempts.back().results;
  RunSummary sum = Summarize(results);
  if (restarted > 0) {
    std::printf("geops-launch: the cluster was restarted %d time%s; the last run resumed from "
                "round %d\n",
                restarted, restarted == 1 ? "" : "s", sum.resumed_from);
  }

  int failed = 0;
  for (const auto& r : results) {
    if (r.exit_code == 0) continue;
    ++failed;
    std::printf("geops-launch: %s %s; its log: %s\n", r.name.c_str(),
                r.signal ? absl::StrCat("was killed by signal ", r.signal).c_str()
                         : absl::StrCat("exited with status ", r.exit_code).c_str(),
                r.stderr_path.c_str());
  }
  const int trainers = t.parties * t.workers_per_party +
                       (t.central_training ? 1 + t.central_workers : 0);
  if (!t.worker_cmd.empty()) {
    // The user's command: every worker's must exit 0; a trainer that prints
    // geops-train-worker lines (examples/) also reports its accuracy.
    int workers = 0, workers_ok = 0;
    for (const auto& r : results) {
      if (!absl::StrContains(r.name, "worker")) continue;
      ++workers;
      workers_ok += r.exit_code == 0 ? 1 : 0;
    }
    const bool ok = failed == 0 && workers_ok == workers;
    std::printf("\nsummary: command workers=%d/%d rounds=%d test_accuracy=%s "
                "local_tier_bytes=%llu global_tier_bytes=%llu malformed=%llu processes_failed=%d "
                "check=%s\n",
                workers_ok, workers, sum.rounds,
                sum.test_accuracy >= 0 ? absl::StrFormat("%.4f", sum.test_accuracy).c_str() : "-",
                static_cast<unsigned long long>(sum.bytes_by_tier["local"]),
                static_cast<unsigned long long>(sum.bytes_by_tier["global"]),
                static_cast<unsigned long long>(sum.malformed), failed,
                ok ? "every worker's command exited 0" : "FAILED");
    return ok ? 0 : 1;
  }
  if (t.env.count("GEOPS_TRAIN")) {
    // The example trainer: no exact result to check, an accuracy to report.
    const bool ok = failed == 0 && sum.learners_reporting == trainers && sum.test_accuracy >= 0;
    std::printf("\nsummary: model=%s rounds=%d workers=%d/%d test_accuracy=%.4f "
                "local_tier_bytes=%llu global_tier_bytes=%llu malformed=%llu processes_failed=%d "
                "check=%s\n",
                t.env["GEOPS_TRAIN"].c_str(), sum.rounds, sum.learners_reporting, trainers,
                sum.test_accuracy, static_cast<unsigned long long>(sum.bytes_by_tier["local"]),
                static_cast<unsigned long long>(sum.bytes_by_tier["global"]),
                static_cast<unsigned long long>(sum.malformed), failed,
                ok ? "every worker trained" : "FAILED");
    return ok ? 0 : 1;
  }
  bool exact = failed == 0 && sum.workers_reporting == trainers && sum.mismatches == 0 &&
               sum.distinct_checksums == 1;
  std::printf("\nsummary: rounds=%d workers=%d/%d values_checked=%llu mismatches=%llu "
              "local_tier_bytes=%llu global_tier_bytes=%llu malformed=%llu processes_failed=%d "
              "check=%s\n",
              sum.rounds, sum.workers_reporting, trainers,
              static_cast<unsigned long long>(sum.values_checked),
              static_cast<unsigned long long>(sum.mismatches),
              static_cast<unsigned long long>(sum.bytes_by_tier["local"]),
              static_cast<unsigned long long>(sum.bytes_by_tier["global"]),
              static_cast<unsigned long long>(sum.malformed), failed,
              exact ? "every worker saw the exact global result" : "FAILED");
  return exact ? 0 : 1;
}
