// Launcher: starts a whole geops topology on one machine, with the DMLC_*
// environment of every process, watches it, and tears it down. Used by
// `geops-launch` (the demo) and by the multi-process tests.
#pragma once

#include <sys/types.h>

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace geops::deploy {

// The GeoMX shape: a central party (global scheduler, scheduler, global
// servers, master worker) and `parties` training parties.
struct Topology {
  int parties = 2;
  int servers_per_party = 1;
  int workers_per_party = 2;
  int global_servers = 1;
  int central_workers = 0;     // training workers of the central party
                               // besides the master (enables central work)
  bool central_training = false;  // DMLC_ENABLE_CENTRAL_WORKER=1
  std::string host = "127.0.0.1";
  // One address per party (central first), e.g. the WAN lab's
  // LAB_PARTY_i_ADDRS: every process of party i listens, and dials, there.
  // Empty: everyone on `host`.
  std::vector<std::string> party_hosts;
  // Extra variables for every process (GEOPS_*, PS_VERBOSE, ...).
  std::map<std::string, std::string> env;
  // A command every worker runs instead of `geops` (through /bin/sh -c),
  // with the worker's DMLC_* environment and GEOPS_SHARD, e.g. a Python
  // training program that joins with `import geops`. Empty: geops.
  std::string worker_cmd;
};

struct ProcessSpec {
  std::string name;  // e.g. "A.worker1"
  std::string tier;  // "central", "A", ...
  std::map<std::string, std::string> env;
  // What to run; empty: the geops binary of RunOptions.
  std::vector<std::string> argv;
};

// A TCP port on `host` (IPv4) that was free a moment ago, for a scheduler
// that must be told its port before it starts. Picked at random outside
// the kernel's ephemeral range, where no outgoing connection can take it.
absl::StatusOr<int> FreePort(const std::string& host);

// Every process of `t`, schedulers first. Scheduler ports are picked free.
absl::StatusOr<std::vector<ProcessSpec>> Plan(const Topology& t);

struct ProcessResult {
  std::string name;
  pid_t pid = 0;
  int exit_code = -1;       // -1 while running
  int signal = 0;           // killed by this signal
  std::string stdout_text;  // whole stdout
  std::string stderr_path;  // file holding stderr
  absl::Duration ran;
};

// A fault to inject (chaos runs, demos): kill `process` with SIGKILL once
// any process prints a line starting with "round ROUND/" (the trainer's
// progress lines), at most once.
struct Fault {
  std::string process;
  int after_round = 0;
};

struct RunOptions {
  std::string binary;             // path of `geops`
  std::string log_dir;            // per-process stderr files
  bool echo = false;              // echo stdout lines, prefixed, as they come
  std::string echo_prefix;        // ... only those that start with this
  bool stop_on_failure = true;    // a non-zero exit stops everyone else
  absl::Duration timeout = absl::Minutes(10);
  std::vector<Fault> faults;
};

class Cluster {
 public:
  explicit Cluster(RunOptions options) : options_(std::move(options)) {}
  ~Cluster();  // kills whatever is still running

  absl::Status Start(const std::vector<ProcessSpec>& specs);
  // Waits for every process (or the timeout, or a failure when
  // stop_on_failure); returns the results in start order.
  std::vector<ProcessResult> Wait();
  // Sends `sig` to the named process.
  absl::Status Kill(const std::string& name, int sig);
  // Waits until `name` has printed a stdout line containing `text`.
  bool WaitForOutput(const std::string& name, const std::string& text, absl::Duration timeout);
  // Everything `name` has printed on stdout, after reading for `wait`.
  std::string OutputAfter(const std::string& name, absl::Duration wait);
  // Stops everything (SIGTERM, then SIGKILL after a grace period).
  void StopAll();
  // Interrupts Wait() (from a signal handler: async-signal-safe).
  static void RequestStop();
  static bool StopRequested();
  // The faults of RunOptions that have fired so far.
  std::vector<Fault> fired() const { return fired_; }

 private:
  struct Child {
    ProcessResult result;
    int out_fd = -1;
    std::string partial;
  };
  void Pump(absl::Duration wait);
  void Reap(bool block);

  // Fires the faults that `line` (printed by a child) triggers.
  void InjectFaults(const std::string& line);

  RunOptions options_;
  std::vector<Child> children_;
  std::vector<Fault> fired_;
};

// Supervised mode (geops-launch --restart N): when a process of the plan
// fails, every other is stopped and the whole plan starts again, up to
// `restarts` times; with GEOPS_CHECKPOINT_DIR the global servers resume
// from their newest checkpoint, so the job goes on from there. Each run's
// logs go to LOG_DIR/run-K (K >= 1; the first run's to LOG_DIR). A fault
// fires in the first run that reaches it, never again.
struct Attempt {
  std::vector<ProcessResult> results;
  bool failed = false;
};
std::vector<Attempt> Supervise(const std::vector<ProcessSpec>& plan, const RunOptions& run,
                               int restarts);

// Sums of the `geops-stats` / `geops-worker` lines of a finished run.
struct RunSummary {
  int workers_reporting = 0;
  int rounds = 0;
  uint64_t values_checked = 0;
  uint64_t mismatches = 0;
  int distinct_checksums = 0;
  std::map<std::string, uint64_t> bytes_by_tier;  // "local" / "global" -> bytes sent
  uint64_t malformed = 0;
  uint64_t copied_bytes = 0;
  // By process name, over its tiers: payload bytes its transports copied,
  // and the memory registrations they made (rdma).
  std::map<std::string, uint64_t> copied_by_process;
  std::map<std::string, uint64_t> registrations;
  uint64_t rejected = 0;  // messages dropped for who sent them
  int resumed_from = 0;   // the checkpoint round the trainers went on from
  // Example-trainer workers (GEOPS_TRAIN) that finished, and the test
  // accuracy shard 0 reached (-1: none reported).
  int learners_reporting = 0;
  double test_accuracy = -1;
  // Peak resident memory (KiB) of each process that printed a stats line.
  std::map<std::string, uint64_t> max_rss_kb;
};
RunSummary Summarize(const std::vector<ProcessResult>& results);

}  // namespace geops::deploy
