#include "deploy/launcher.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <random>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "core/node/report.h"

extern char** environ;

namespace geops::deploy {
namespace {

volatile std::sig_atomic_t g_stop_requested = 0;

}  // namespace

absl::StatusOr<int> FreePort(const std::string& host) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  if (inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("\"", host, "\" is not an IPv4 address"));
  }
  auto binds = [&](int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    a.sin_port = htons(static_cast<uint16_t>(port));
    socklen_t len = sizeof(a);
    int got = bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
                      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0
                  ? ntohs(a.sin_port)
                  : -1;
    close(fd);
    return got;
  };
  // Outside the kernel's ephemeral range: a port from inside it can be
  // taken by any outgoing connection (the cluster's own ones included)
  // between now and the moment the scheduler binds it.
  int lo = 32768, hi = 60999;
  if (FILE* f = std::fopen("/proc/sys/net/ipv4/ip_local_port_range", "r")) {
    if (std::fscanf(f, "%d %d", &lo, &hi) != 2) lo = 32768, hi = 60999;
    std::fclose(f);
  }
  int first = 10000, last = lo - 1;
  if (last - first < 1000) first = hi + 1, last = 65535;
  if (last - first >= 100) {
    std::mt19937 rng(std::random_device{}());
    std::uniform_int_distribution<int> pick(first, last);
    for (int i = 0; i < 200; ++i) {
      if (int p = binds(pick(rng)); p > 0) return p;
    }
  }
  if (int p = binds(0); p > 0) return p;
  return absl::UnavailableError(absl::StrCat("cannot find a free port on ", host));
}

absl::StatusOr<std::vector<ProcessSpec>> Plan(const Topology& t) {
  if (t.parties < 0 || t.servers_per_party < 1 || t.workers_per_party < 1 ||
      t.global_servers < 1 || t.central_workers < 0) {
    return absl::InvalidArgumentError("a topology needs >= 1 server, worker and global server");
  }
  if (!t.party_hosts.empty() && static_cast<int>(t.party_hosts.size()) != t.parties + 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "party hosts: expected ", t.parties + 1, " addresses (the central party first), got ",
        t.party_hosts.size()));
  }
  auto host_of = [&](int party) {
    return t.party_hosts.empty() ? t.host : t.party_hosts[party];
  };
  // Every scheduler of the plan on a port of its own: two picks can land on
  // the same free port, and the second scheduler to start would fail.
  std::set<int> taken;
  auto pick_port = [&](const std::string& host) -> absl::StatusOr<int> {
    for (int attempt = 0; attempt < 100; ++attempt) {
      auto p = FreePort(host);
      if (!p.ok() || taken.insert(*p).second) return p;
    }
    return absl::UnavailableError(absl::StrCat("cannot find free ports on ", host));
  };
  auto gport = pick_port(host_of(0));
  if (!gport.ok()) return gport.status();
  std::string gp = absl::StrCat(*gport);
  const int central_trainers = t.central_training ? 1 + t.central_workers : 0;
  const int all_workers = t.parties * t.workers_per_party + central_trainers;
  if (all_workers == 0) {
    return absl::InvalidArgumentError("no training worker: add parties or central training");
  }

  std::map<std::string, std::string> common = t.env;
  common["DMLC_PS_GLOBAL_ROOT_URI"] = host_of(0);
  common["DMLC_PS_GLOBAL_ROOT_PORT"] = gp;
  common["DMLC_NUM_GLOBAL_SERVER"] = absl::StrCat(t.global_servers);
  common["DMLC_NUM_GLOBAL_WORKER"] = absl::StrCat(t.parties * t.servers_per_party);
  common["DMLC_NUM_ALL_WORKER"] = absl::StrCat(all_workers);
  common["DMLC_ENABLE_CENTRAL_WORKER"] = t.central_training ? "1" : "0";

  std::vector<ProcessSpec> out;
  // Each training worker's share of the data (the example trainer reads
  // it; the synthetic one has no data), central trainers first.
  int shard = 0;
  auto add = [&](std::string name, std::string tier, std::map<std::string, std::string> env) {
    for (const auto& [k, v] : common) env.try_emplace(k, v);
    out.push_back({std::move(name), std::move(tier), std::move(env), {}});
  };

  add("global_scheduler", "central", {{"DMLC_ROLE_GLOBAL", "global_scheduler"}});

  auto party = [&](const std::string& name, int index, int servers, int workers, bool central) {
    const std::string host = host_of(index);
    auto port = pick_port(host);
    if (!port.ok()) return port.status();
    std::map<std::string, std::string> local = {
        {"DMLC_PS_ROOT_URI", host},
        {"DMLC_NODE_HOST", host},
        {"DMLC_PS_ROOT_PORT", absl::StrCat(*port)},
        {"DMLC_NUM_SERVER", absl::StrCat(servers)},
        {"DMLC_NUM_WORKER", absl::StrCat(workers)},
        {"GEOPS_PARTY", name},
    };
    auto with = [&](std::map<std::string, std::string> extra) {
      for (const auto& [k, v] : local) extra.try_emplace(k, v);
      return extra;
    };
    add(name + ".scheduler", name, with({{"DMLC_ROLE", "scheduler"}}));
    for (int s = 0; s < servers; ++s) {
      if (central) {
        add(absl::StrCat(name, ".global_server", s), name,
            with({{"DMLC_ROLE", "server"}, {"DMLC_ROLE_GLOBAL", "global_server"}}));
      } else {
        add(absl::StrCat(name, ".server", s), name, with({{"DMLC_ROLE", "server"}}));
      }
    }
    for (int w = 0; w < workers; ++w) {
      std::map<std::string, std::string> env = {{"DMLC_ROLE", "worker"}};
      if (central && w == 0) env["DMLC_ROLE_MASTER_WORKER"] = "1";
      // One progress printer per party keeps the demo readable.
      env.try_emplace("GEOPS_PROGRESS", w == 0 ? "1" : "0");
      if (!central || t.central_training) {
        env.try_emplace("GEOPS_SHARD", absl::StrCat(shard++, "/", all_workers));
      }
      if (!t.worker_cmd.empty()) env.try_emplace("PYTHONUNBUFFERED", "1");
      add(absl::StrCat(name, central && w == 0 ? ".master_worker" : ".worker",
                       central && w == 0 ? "" : absl::StrCat(w)),
          name, with(env));
      if (!t.worker_cmd.empty()) out.back().argv = {"/bin/sh", "-c", t.worker_cmd};
    }
    return absl::OkStatus();
  };
  if (auto s = party("central", 0, t.global_servers, 1 + t.central_workers, true); !s.ok()) {
    return s;
  }
  for (int p = 0; p < t.parties; ++p) {
    std::string name(1, static_cast<char>('A' + p % 26));
    if (p >= 26) name += absl::StrCat(p / 26);
    if (auto s = party(name, p + 1, t.servers_per_party, t.workers_per_party, false); !s.ok()) {
      return s;
    }
  }
  return out;
}

void Cluster::RequestStop() { g_stop_requested = 1; }
bool Cluster::StopRequested() { return g_stop_requested != 0; }

Cluster::~Cluster() { StopAll(); }

absl::Status Cluster::Start(const std::vector<ProcessSpec>& specs) {
  if (access(options_.binary.c_str(), X_OK) != 0) {
    return absl::NotFoundError(absl::StrCat("no geops executable at ", options_.binary));
  }
  for (const auto& spec : specs) {
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0) return absl::InternalError("pipe() failed");
    std::string err_path = absl::StrCat(options_.log_dir, "/", spec.name, ".log");
    int err_fd = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (err_fd < 0) {
      close(pipefd[0]);
      close(pipefd[1]);
      return absl::InternalError(absl::StrCat("cannot write ", err_path));
    }
    // Everything the child needs is prepared before fork(): only
    // async-signal-safe calls may run between fork() and exec().
    std::vector<std::string> env_strings;
    for (char** e = environ; *e != nullptr; ++e) {
      absl::string_view kv(*e);
      if (absl::StartsWith(kv, "DMLC_") || absl::StartsWith(kv, "PS_") ||
          absl::StartsWith(kv, "GEOPS_") || absl::StartsWith(kv, "PORT=")) {
        continue;
      }
      env_strings.emplace_back(kv);
    }
    for (const auto& [k, v] : spec.env) env_strings.push_back(absl::StrCat(k, "=", v));
    std::vector<char*> envp;
    for (auto& s : env_strings) envp.push_back(s.data());
    envp.push_back(nullptr);
    std::vector<std::string> args = spec.argv;
    if (args.empty()) args = {options_.binary};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::string bin = args[0];
    pid_t parent = getpid();

    pid_t pid = fork();
    if (pid < 0) return absl::InternalError("fork() failed");
    if (pid == 0) {
      // Never outlive the launcher: a killed launcher takes its cluster along.
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(127);
      dup2(pipefd[1], STDOUT_FILENO);
      dup2(err_fd, STDERR_FILENO);
      execve(bin.c_str(), argv.data(), envp.data());
      _exit(127);
    }
    close(pipefd[1]);
    close(err_fd);
    Child c;
    c.result.name = spec.name;
    c.result.pid = pid;
    c.result.stderr_path = err_path;
    c.out_fd = pipefd[0];
    children_.push_back(std::move(c));
  }
  return absl::OkStatus();
}

void Cluster::Pump(absl::Duration wait) {
  std::vector<pollfd> fds;
  std::vector<size_t> owner;
  for (size_t i = 0; i < children_.size(); ++i) {
    if (children_[i].out_fd < 0) continue;
    fds.push_back({children_[i].out_fd, POLLIN, 0});
    owner.push_back(i);
  }
  if (fds.empty()) {
    absl::SleepFor(wait);
    return;
  }
  int rc = poll(fds.data(), fds.size(), static_cast<int>(absl::ToInt64Milliseconds(wait)));
  if (rc <= 0) return;
  for (size_t j = 0; j < fds.size(); ++j) {
    if (!(fds[j].revents & (POLLIN | POLLHUP | POLLERR))) continue;
    Child& c = children_[owner[j]];
    char buf[65536];
    ssize_t n = read(c.out_fd, buf, sizeof(buf));
    if (n <= 0) {
      close(c.out_fd);
      c.out_fd = -1;
      if (!c.partial.empty()) c.partial += "\n";
    } else {
      c.partial.append(buf, n);
    }
    size_t nl;
    while ((nl = c.partial.find('\n')) != std::string::npos) {
      std::string line = c.partial.substr(0, nl + 1);
      c.partial.erase(0, nl + 1);
      c.result.stdout_text += line;
      if (!options_.faults.empty()) InjectFaults(line);
      // The per-tier stats lines feed the summary; echoing them buries the
      // progress lines.
      if (options_.echo && !absl::StartsWith(line, "geops-stats ") &&
          absl::StartsWith(line, options_.echo_prefix)) {
        std::printf("[%-20s] %s", c.result.name.c_str(), line.c_str());
        std::fflush(stdout);
      }
    }
  }
}

void Cluster::Reap(bool block) {
  for (auto& c : children_) {
    if (c.result.exit_code >= 0 || c.result.signal != 0) continue;
    int status = 0;
    pid_t r = waitpid(c.result.pid, &status, block ? 0 : WNOHANG);
    if (r != c.result.pid) continue;
    if (WIFEXITED(status)) c.result.exit_code = WEXITSTATUS(status);
    if (WIFSIGNALED(status)) c.result.signal = WTERMSIG(status);
  }
}

std::vector<ProcessResult> Cluster::Wait() {
  absl::Time start = absl::Now();
  absl::Time deadline = start + options_.timeout;
  for (;;) {
    Pump(absl::Milliseconds(50));
    Reap(false);
    bool running = false, failed = false;
    for (auto& c : children_) {
      bool done = c.result.exit_code >= 0 || c.result.signal != 0;
      if (done && c.result.ran == absl::ZeroDuration()) c.result.ran = absl::Now() - start;
      running |= !done;
      failed |= (c.result.exit_code > 0 || c.result.signal != 0);
    }
    if (!running) break;
    if (g_stop_requested) {
      std::fprintf(stderr, "geops-launch: interrupted; stopping every process\n");
      StopAll();
      break;
    }
    if (failed && options_.stop_on_failure) {
      StopAll();
      break;
    }
    if (absl::Now() > deadline) {
      std::fprintf(stderr, "geops-launch: timed out after %s; stopping every process\n",
                   absl::FormatDuration(options_.timeout).c_str());
      StopAll();
      break;
    }
  }
  // Drain what is left in the pipes.
  for (int i = 0; i < 20; ++i) {
    bool open = false;
    for (auto& c : children_) open |= c.out_fd >= 0;
    if (!open) break;
    Pump(absl::Milliseconds(50));
  }
  std::vector<ProcessResult> out;
  for (auto& c : children_) out.push_back(c.result);
  return out;
}

void Cluster::InjectFaults(const std::string& line) {
  for (auto it = options_.faults.begin(); it != options_.faults.end();) {
    if (!absl::StartsWith(line, absl::StrCat("round ", it->after_round, "/"))) {
      ++it;
      continue;
    }
    const bool killed = Kill(it->process, SIGKILL).ok();
    std::printf("geops-launch: fault: %s %s after round %d\n", it->process.c_str(),
                killed ? "killed (SIGKILL)" : "not running; not killed", it->after_round);
    std::fflush(stdout);
    fired_.push_back(*it);
    it = options_.faults.erase(it);
  }
}

std::vector<Attempt> Supervise(const std::vector<ProcessSpec>& plan, const RunOptions& run,
                               int restarts) {
  std::vector<Attempt> attempts;
  RunOptions o = run;
  for (int k = 0;; ++k) {
    if (k > 0) {
      o.log_dir = absl::StrCat(run.log_dir, "/run-", k);
      mkdir(o.log_dir.c_str(), 0755);
    }
    Cluster cluster(o);
    Attempt a;
    if (auto s = cluster.Start(plan); !s.ok()) {
      std::fprintf(stderr, "geops-launch: %s\n", std::string(s.message()).c_str());
      a.failed = true;
      attempts.push_back(std::move(a));
      return attempts;
    }
    a.results = cluster.Wait();
    for (const auto& r : a.results) a.failed |= r.exit_code != 0;
    // Faults that fired are done with; the others wait for a later run.
    for (const Fault& f : cluster.fired()) {
      for (auto it = o.faults.begin(); it != o.faults.end(); ++it) {
        if (it->process == f.process && it->after_round == f.after_round) {
          o.faults.erase(it);
          break;
        }
      }
    }
    attempts.push_back(std::move(a));
    if (!attempts.back().failed || k >= restarts || Cluster::StopRequested()) {
      // A fault that never fired did not test anything: say so.
      for (const Fault& f : o.faults) {
        std::printf("geops-launch: fault %s@%d never fired: no process printed \"round %d/\" "
                    "(the built-in trainer prints it; --train and --worker-cmd do not)\n",
                    f.process.c_str(), f.after_round, f.after_round);
      }
      std::fflush(stdout);
      return attempts;
    }
    for (const auto& r : attempts.back().results) {
      // Those the launcher stopped (SIGTERM) only followed the failure.
      if (r.exit_code == 0 || r.signal == SIGTERM || (r.exit_code < 0 && r.signal == 0)) continue;
      std::printf("geops-launch: %s %s\n", r.name.c_str(),
                  r.signal ? absl::StrCat("was killed by signal ", r.signal).c_str()
                           : absl::StrCat("exited with status ", r.exit_code).c_str());
    }
    std::printf("geops-launch: restarting the cluster (restart %d of %d); logs in %s/run-%d\n",
                k + 1, restarts, run.log_dir.c_str(), k + 1);
    std::fflush(stdout);
  }
}

absl::Status Cluster::Kill(const std::string& name, int sig) {
  for (auto& c : children_) {
    if (c.result.name == name) {
      if (kill(c.result.pid, sig) != 0) return absl::InternalError("kill() failed");
      return absl::OkStatus();
    }
  }
  return absl::NotFoundError(absl::StrCat("no process named ", name));
}

bool Cluster::WaitForOutput(const std::string& name, const std::string& text,
                            absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    for (auto& c : children_) {
      if (c.result.name == name && absl::StrContains(c.result.stdout_text, text)) return true;
    }
    Pump(absl::Milliseconds(50));
    Reap(false);
  }
  return false;
}

std::string Cluster::OutputAfter(const std::string& name, absl::Duration wait) {
  absl::Time deadline = absl::Now() + wait;
  do {
    Pump(absl::Milliseconds(20));
    Reap(false);
  } while (absl::Now() < deadline);
  for (auto& c : children_) {
    if (c.result.name == name) return c.result.stdout_text;
  }
  return "";
}

void Cluster::StopAll() {
  auto alive = [](const Child& c) { return c.result.exit_code < 0 && c.result.signal == 0; };
  bool any = false;
  for (auto& c : children_) {
    if (alive(c)) {
      kill(c.result.pid, SIGTERM);
      any = true;
    }
  }
  if (!any) return;
  absl::Time deadline = absl::Now() + absl::Seconds(3);
  while (absl::Now() < deadline) {
    Pump(absl::Milliseconds(20));
    Reap(false);
    bool left = false;
    for (auto& c : children_) left |= alive(c);
    if (!left) return;
  }
  for (auto& c : children_) {
    if (alive(c)) kill(c.result.pid, SIGKILL);
  }
  Reap(true);
}

RunSummary Summarize(const std::vector<ProcessResult>& results) {
  RunSummary s;
  std::set<std::string> checksums;
  for (const auto& r : results) {
    for (absl::string_view line : absl::StrSplit(r.stdout_text, '\n')) {
      const std::string_view text(line.data(), line.size());
      if (auto t = report::TierStats::Parse(text)) {
        s.bytes_by_tier[t->tier] += t->sent_bytes;
        s.malformed += t->malformed;
        s.copied_bytes += t->copied_bytes;
        s.copied_by_process[r.name] += t->copied_bytes;
        s.registrations[r.name] += t->registrations;
        s.rejected += t->rejected;
        s.max_rss_kb[r.name] = std::max(s.max_rss_kb[r.name], t->max_rss_kb);
      } else if (auto l = report::Learner::Parse(text)) {
        ++s.learners_reporting;
        s.rounds = std::max(s.rounds, l->rounds);
        if (l->test_accuracy) s.test_accuracy = *l->test_accuracy;
      } else if (auto w = report::Worker::Parse(text); w && w->trained) {
        ++s.workers_reporting;
        s.rounds = std::max(s.rounds, w->rounds);
        s.resumed_from = std::max(s.resumed_from, w->resumed_from);
        s.values_checked += w->values_checked;
        s.mismatches += w->mismatches;
        s.copied_bytes += w->copied_bytes;
        checksums.insert(absl::StrCat(w->checksum));
      }
    }
  }
  s.distinct_checksums = static_cast<int>(checksums.size());
  return s;
}

}  // namespace geops::deploy
