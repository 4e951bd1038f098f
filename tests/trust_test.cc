// Multi-process tests of what a cluster does with input it must not trust:
// forged and misdirected messages, oversized frames, schedulers that never
// come up, inconsistent launch scripts, and names in logs. Each one starts
// real `geops` processes on 127.0.0.1 and checks exact results or a
// bounded, clearly explained failure.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zmq.h>

#include <catch2/catch.hpp>
#include <csignal>
#include <thread>

#include "cluster_util.h"
#include "core/kv/partition.h"
#include "core/wire/codec.h"
#include "core/wire/control.h"

using namespace geops;
using namespace geops::deploy;
using namespace geops::testing;

namespace {

ProcessSpec& Find(std::vector<ProcessSpec>& plan, const std::string& name) {
  for (auto& p : plan) {
    if (p.name == name) return p;
  }
  FAIL("no process " << name << " in the plan");
  return plan.front();
}

int PickPort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
  REQUIRE(getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  close(fd);
  return ntohs(a.sin_port);
}

// A stranger on the network: a ZeroMQ DEALER that speaks geops's wire
// format to any port, with whatever sender id it likes.
class Stranger {
 public:
  explicit Stranger(int port) : ctx_(zmq_ctx_new()), sock_(zmq_socket(ctx_, ZMQ_DEALER)) {
    int linger = 2000;
    zmq_setsockopt(sock_, ZMQ_LINGER, &linger, sizeof(linger));
    std::string ep = "tcp://127.0.0.1:" + std::to_string(port);
    REQUIRE(zmq_connect(sock_, ep.c_str()) == 0);
  }
  ~Stranger() {
    zmq_close(sock_);
    zmq_ctx_term(ctx_);
  }
  void Send(const Message& m) {
    Buffer h = wire::EncodeHeader(m);
    zmq_send(sock_, h.data(), h.size(), m.segments.empty() ? 0 : ZMQ_SNDMORE);
    for (size_t i = 0; i < m.segments.size(); ++i) {
      zmq_send(sock_, m.segments[i].data(), m.segments[i].size(),
               i + 1 < m.segments.size() ? ZMQ_SNDMORE : 0);
    }
  }

 private:
  void* ctx_;
  void* sock_;
};

Message ForgedAbort(int sender) {
  Message m;
  m.header.command = Command::kAbort;
  m.header.sender = sender;
  m.header.recipient = kSchedulerId;
  m.segments.push_back(EncodeText("forged: stop everything"));
  return m;
}

Message ForgedPush(int sender, Key key, uint64_t round, size_t elements) {
  Message m;
  m.header.command = Command::kData;
  m.header.sender = sender;
  m.header.recipient = ServerId(0);
  m.header.flags = msgflag::kRequest | msgflag::kPush;
  m.header.timestamp = 7;
  m.header.round = round;
  m.header.dtype = DType::kFloat32;
  m.header.key_count = 1;
  m.segments.push_back(Buffer::CopyOf(&key, sizeof(key)));
  std::vector<float> v(elements, 1000.0f);
  m.segments.push_back(Buffer::CopyOf(v.data(), v.size() * sizeof(float)));
  return m;
}

// Runs `plan` with no process stopping the others, and returns when all
// have exited (the test's own timeout is the launcher's).
std::vector<ProcessResult> RunAll(const std::vector<ProcessSpec>& plan, absl::Duration timeout,
                                  absl::Duration* took) {
  RunOptions o;
  o.binary = GEOPS_BINARY;
  o.log_dir = TempDir();
  o.stop_on_failure = false;
  o.timeout = timeout;
  Cluster c(o);
  absl::Time start = absl::Now();
  REQUIRE(c.Start(plan).ok());
  auto results = c.Wait();
  *took = absl::Now() - start;
  return results;
}

bool AnyLogHas(const std::vector<ProcessResult>& results, const std::string& text) {
  for (const auto& r : results) {
    if (ReadFile(r.stderr_path).find(text) != std::string::npos) return true;
  }
  return false;
}

// Every process failed by itself (no signal from the launcher), within
// the test's bound.
// The master worker may have finished its only job (initialising) first.
void RequireAllFailed(const std::vector<ProcessResult>& results) {
  std::string all;  // every log, for whichever process misbehaves
  for (const auto& r : results) {
    all += r.name + " exit=" + std::to_string(r.exit_code) + " signal=" +
           std::to_string(r.signal) + " after " + absl::FormatDuration(r.ran) + "\n" +
           ReadFile(r.stderr_path);
  }
  INFO(all);
  for (const auto& r : results) {
    INFO(r.name << " exit=" << r.exit_code << " signal=" << r.signal);
    REQUIRE(r.signal == 0);
    if (r.name != "central.master_worker") REQUIRE(r.exit_code != 0);
  }
}

}  // namespace

TEST_CASE("host names in DMLC_PS_ROOT_URI and DMLC_PS_GLOBAL_ROOT_URI work", "[cluster][trust]") {
  char host[256] = {};
  REQUIRE(gethostname(host, sizeof(host) - 1) == 0);
  RunExact(Base(5, "3000,17"), 4, [&](std::vector<ProcessSpec>& plan) {
    for (auto& p : plan) {
      if (p.env.count("DMLC_PS_ROOT_URI")) p.env["DMLC_PS_ROOT_URI"] = "localhost";
      // The machine's own name: whatever address it resolves to, every
      // process resolves it the same way and the scheduler listens there.
      p.env["DMLC_PS_GLOBAL_ROOT_URI"] = host;
    }
  });
}

TEST_CASE("DMLC_ENABLE_CENTRAL_WORKER set only on the global server, as GeoMX scripts do",
          "[cluster][trust]") {
  // Central party: master + 1 worker, both training; 2 parties x 2 workers.
  Topology t = Base(6, "5000,3");
  t.central_workers = 1;
  t.central_training = true;  // DMLC_NUM_ALL_WORKER=6
  RunExact(t, 6, [](std::vector<ProcessSpec>& plan) {
    for (auto& p : plan) {
      bool global_server = p.env.count("DMLC_ROLE_GLOBAL") &&
                           p.env["DMLC_ROLE_GLOBAL"] == "global_server";
      if (global_server) {
        p.env["DMLC_ENABLE_CENTRAL_WORKER"] = "1";
      } else {
        p.env.erase("DMLC_ENABLE_CENTRAL_WORKER");
      }
    }
  });
}

TEST_CASE("with DMLC_ENABLE_CENTRAL_WORKER=0 the central workers' pushes are ignored",
          "[cluster][trust]") {
  Topology t = Base(6, "5000,3");
  t.central_workers = 1;       // this worker pushes every round ...
  t.central_training = false;  // ... and DMLC_NUM_ALL_WORKER=4 leaves it out
  // Five workers check every value: the four that count and the one ignored.
  // The ignored one holds no round back; when it lags, its pulls are
  // answered with a later round's exact result, which it accepts only as
  // such (later_results counts those rounds).
  Outcome out = RunExact(t, 5);
  bool seen = false;
  for (const auto& r : out.results) {
    if (r.name != "central.worker1") continue;
    INFO(r.stdout_text);
    REQUIRE(r.stdout_text.find("counted=0") != std::string::npos);
    REQUIRE(r.stdout_text.find("later_results=") != std::string::npos);
    seen = true;
  }
  REQUIRE(seen);
}

TEST_CASE("forged aborts and pushes from strangers are rejected and training stays exact",
          "[cluster][trust]") {
  Topology t = Base(60, "20000,3");
  auto plan = Plan(t);
  REQUIRE(plan.ok());
  const int sched_port = std::stoi(Find(*plan, "A.scheduler").env["DMLC_PS_ROOT_PORT"]);
  const int server_port = PickPort();
  Find(*plan, "A.server0").env["PORT"] = std::to_string(server_port);

  RunOptions o;
  o.binary = GEOPS_BINARY;
  o.log_dir = TempDir();
  o.timeout = absl::Seconds(120);
  Cluster c(o);
  REQUIRE(c.Start(*plan).ok());
  REQUIRE(c.WaitForOutput("A.worker0", "round 3/", absl::Seconds(60)));
  {
    Stranger to_scheduler(sched_port);
    // Claims to be worker rank 0 (id 9), an innocent member of the party.
    to_scheduler.Send(ForgedAbort(WorkerId(0)));
    to_scheduler.Send(ForgedAbort(0));
    Stranger to_server(server_port);
    const Key key = SpreadKey(0, 2);
    for (uint64_t round = 4; round < 12; ++round) {
      to_server.Send(ForgedPush(WorkerId(7), key, round, 20000));  // not in the table
      to_server.Send(ForgedPush(WorkerId(1), key, round, 20000));  // a member, wrong connection
    }
  }
  Outcome out;
  out.results = c.Wait();
  out.summary = Summarize(out.results);
  DumpFailures(out.results);
  for (const auto& r : out.results) {
    INFO(r.name);
    REQUIRE(r.exit_code == 0);
  }
  REQUIRE(out.summary.mismatches == 0);
  REQUIRE(out.summary.distinct_checksums == 1);
  REQUIRE(out.summary.workers_reporting == 4);
  // 2 forged aborts + 16 forged pushes, every one counted where it landed.
  REQUIRE(out.summary.rejected >= 18);
  REQUIRE_FALSE(AnyLogHas(out.results, "forged: stop everything"));
}

TEST_CASE("a peer announcing huge frames cannot make a process hold the memory",
          "[cluster][trust]") {
  Topology t = Base(60, "20000,3");
  auto plan = Plan(t);
  REQUIRE(plan.ok());
  const int sched_port = std::stoi(Find(*plan, "A.scheduler").env["DMLC_PS_ROOT_PORT"]);
  const int server_port = PickPort();
  Find(*plan, "A.server0").env["PORT"] = std::to_string(server_port);

  // 1 GiB of zero pages: sending it costs this process no memory.
  const size_t huge = size_t{1} << 30;
  void* zeros = mmap(nullptr, huge, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  REQUIRE(zeros != MAP_FAILED);

  RunOptions o;
  o.binary = GEOPS_BINARY;
  o.log_dir = TempDir();
  o.timeout = absl::Seconds(180);
  Cluster c(o);
  REQUIRE(c.Start(*plan).ok());
  REQUIRE(c.WaitForOutput("A.worker0", "round 3/", absl::Seconds(60)));
  {
    // Four connections to each target, each streaming one 1 GiB frame.
    std::vector<std::thread> senders;
    for (int port : {sched_port, server_port}) {
      for (int i = 0; i < 4; ++i) {
        senders.emplace_back([port, zeros, huge] {
          void* ctx = zmq_ctx_new();
          void* s = zmq_socket(ctx, ZMQ_DEALER);
          int linger = 0;
          zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof(linger));
          std::string ep = "tcp://127.0.0.1:" + std::to_string(port);
          zmq_connect(s, ep.c_str());
          zmq_msg_t m;
          zmq_msg_init_data(&m, zeros, huge, nullptr, nullptr);
          zmq_msg_send(&m, s, ZMQ_DONTWAIT);
          std::this_thread::sleep_for(std::chrono::seconds(3));
          zmq_close(s);
          zmq_ctx_term(ctx);
        });
      }
    }
    for (auto& th : senders) th.join();
  }
  Outcome out;
  out.results = c.Wait();
  out.summary = Summarize(out.results);
  munmap(zeros, huge);
  DumpFailures(out.results);
  for (const auto& r : out.results) {
    INFO(r.name);
    REQUIRE(r.exit_code == 0);
  }
  REQUIRE(out.summary.mismatches == 0);
  REQUIRE(out.summary.workers_reporting == 4);
  // The stated bound: a process holds at most GEOPS_MAX_MESSAGE_MB (256 MiB)
  // per connection of a peer's frame; a peer announcing more holds nothing.
  // These two processes need well under 100 MiB for this workload.
  for (const char* name : {"A.scheduler", "A.server0"}) {
    INFO(name << " peak RSS " << out.summary.max_rss_kb[name] << " KiB");
    REQUIRE(out.summary.max_rss_kb[name] > 0);
    REQUIRE(out.summary.max_rss_kb[name] < 150 * 1024);
  }
}

TEST_CASE("a scheduler that cannot start stops every process within the connect timeout",
          "[cluster][trust]") {
  Topology t = Base(5, "100");
  t.env["GEOPS_STARTUP_TIMEOUT"] = "120";
  t.env["GEOPS_CONNECT_TIMEOUT"] = "4";
  auto plan = Plan(t);
  REQUIRE(plan.ok());
  std::string which = GENERATE(as<std::string>{}, "A.scheduler", "global_scheduler");
  INFO("the scheduler that cannot start: " << which);
  ProcessSpec& victim = Find(*plan, which);
  const char* port_var =
      which == "global_scheduler" ? "DMLC_PS_GLOBAL_ROOT_PORT" : "DMLC_PS_ROOT_PORT";
  const int port = std::stoi(victim.env[port_var]);
  // Something else holds its port: it accepts TCP but never speaks geops.
  int squatter = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(squatter, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(bind(squatter, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
  REQUIRE(listen(squatter, 64) == 0);

  absl::Duration took;
  auto results = RunAll(*plan, absl::Seconds(100), &took);
  close(squatter);
  INFO("every process ended " << absl::FormatDuration(took) << " after the start");
  RequireAllFailed(results);
  REQUIRE(took < absl::Seconds(45));
  REQUIRE(AnyLogHas(results, absl::StrCat("no scheduler answered at 127.0.0.1:", port)));
}

TEST_CASE("a second master worker is refused at registration, naming the variable",
          "[cluster][trust]") {
  Topology t = Base(3, "100");
  t.central_workers = 1;
  t.env["GEOPS_STARTUP_TIMEOUT"] = "120";
  t.env["GEOPS_CONNECT_TIMEOUT"] = "5";
  auto plan = Plan(t);
  REQUIRE(plan.ok());
  Find(*plan, "central.worker1").env["DMLC_ROLE_MASTER_WORKER"] = "1";
  absl::Duration took;
  auto results = RunAll(*plan, absl::Seconds(100), &took);
  RequireAllFailed(results);
  REQUIRE(took < absl::Seconds(30));
  REQUIRE(AnyLogHas(results, "two workers set DMLC_ROLE_MASTER_WORKER=1"));
}

TEST_CASE("an inconsistent DMLC_NUM_ALL_WORKER is refused, naming the variable",
          "[cluster][trust]") {
  Topology t = Base(3, "100");
  t.env["GEOPS_STARTUP_TIMEOUT"] = "120";
  t.env["GEOPS_CONNECT_TIMEOUT"] = "5";
  auto plan = Plan(t);
  REQUIRE(plan.ok());
  SECTION("inside one party") {
    Find(*plan, "A.worker1").env["DMLC_NUM_ALL_WORKER"] = "5";
  }
  SECTION("between parties (their servers disagree in the global tier)") {
    for (auto& p : *plan) {
      if (p.tier == "B") p.env["DMLC_NUM_ALL_WORKER"] = "5";
    }
  }
  absl::Duration took;
  auto results = RunAll(*plan, absl::Seconds(100), &took);
  RequireAllFailed(results);
  REQUIRE(took < absl::Seconds(30));
  REQUIRE(AnyLogHas(results, "DMLC_NUM_ALL_WORKER differs"));
}

TEST_CASE("a consistent but wrong DMLC_NUM_ALL_WORKER is named by the workers",
          "[cluster][trust]") {
  Topology t = Base(3, "100");
  auto plan = Plan(t);
  REQUIRE(plan.ok());
  for (auto& p : *plan) p.env["DMLC_NUM_ALL_WORKER"] = "5";  // the cluster trains 4
  absl::Duration took;
  auto results = RunAll(*plan, absl::Seconds(100), &took);
  bool named = false;
  for (const auto& r : results) {
    if (r.name.find("worker") == std::string::npos || r.name == "central.master_worker") continue;
    INFO(r.name << "\n" << ReadFile(r.stderr_path));
    REQUIRE(r.exit_code == 1);
    named |= ReadFile(r.stderr_path).find("summed 4 workers' gradients but DMLC_NUM_ALL_WORKER=5") !=
             std::string::npos;
  }
  REQUIRE(named);
}

TEST_CASE("a dead party server is named by its party and role everywhere", "[cluster][trust]") {
  Topology t = Base(400, "20000,3");
  t.env["PS_HEARTBEAT_TIMEOUT"] = "3";
  t.env["GEOPS_PROGRESS"] = "1";
  auto plan = Plan(t);
  REQUIRE(plan.ok());
  auto c = StartUntilRound(*plan, "A.worker0", 3);
  REQUIRE(c->Kill("A.server0", SIGKILL).ok());
  auto results = c->Wait();
  // Party B's processes learn of it through the global tier: the message
  // they log must say which party's server died, not "worker rank 0".
  std::string b_log = ReadFile(results[0].stderr_path);  // global scheduler
  for (const auto& r : results) {
    if (r.name == "B.worker0") b_log = ReadFile(r.stderr_path);
  }
  INFO(b_log);
  REQUIRE(b_log.find("the server of party A") != std::string::npos);
  // And no log of party B calls party A's tier its "local tier".
  REQUIRE(b_log.find("local tier") == std::string::npos);
}

TEST_CASE("a process paused longer than the heartbeat timeout does not blame its scheduler",
          "[cluster][trust]") {
  Topology t = Base(400, "20000,3");
  t.env["PS_HEARTBEAT_TIMEOUT"] = "2";
  t.env["GEOPS_PROGRESS"] = "1";
  auto plan = Plan(t);
  REQUIRE(plan.ok());
  auto c = StartUntilRound(*plan, "A.worker0", 3);
  REQUIRE(c->Kill("A.worker1", SIGSTOP).ok());
  std::this_thread::sleep_for(std::chrono::seconds(5));
  REQUIRE(c->Kill("A.worker1", SIGCONT).ok());
  auto results = c->Wait();
  for (const auto& r : results) {
    if (r.name != "A.worker1") continue;
    std::string log = ReadFile(r.stderr_path);
    INFO(log);
    REQUIRE(log.find("scheduler at") == std::string::npos);
    REQUIRE(log.find("has been silent") != std::string::npos);  // it heard why it was dropped
  }
}

namespace {

std::string NewKeyFile(const std::string& dir, const std::string& name) {
  std::string path = dir + "/" + name;
  std::string cmd = std::string(GEOPS_BINARY) + " --gen-keyfile " + path + " > /dev/null";
  REQUIRE(std::system(cmd.c_str()) == 0);
  return path;
}

// Captures loopback traffic while `body` runs; returns the raw capture.
// The capture stops on every way out, a failed REQUIRE included: a
// tcpdump left running fills the disk.
std::string CaptureLoopback(const std::string& dir, const std::function<void()>& body) {
  std::string pcap = dir + "/lo.pcap";
  std::string pidfile = dir + "/tcpdump.pid";
  // Only this run's addresses (see the party hosts below): other geops
  // runs on the same loopback must not count as plaintext of ours.
  std::string start = "tcpdump -i lo -U -s 0 -w " + pcap +
                      " 'tcp and net 127.0.77.0/24' > " + dir + "/tcpdump.log 2>&1 & echo $! > " +
                      pidfile;
  REQUIRE(std::system(start.c_str()) == 0);
  struct StopCapture {
    std::string pidfile;
    ~StopCapture() { std::system(("kill -INT $(cat " + pidfile + ") 2>/dev/null; sleep 0.5").c_str()); }
  } stop{pidfile};
  // tcpdump prints "listening on" once the capture runs.
  for (int i = 0; i < 100 && ReadFile(dir + "/tcpdump.log").find("listening") == std::string::npos;
       ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  body();
  std::system(("kill -INT $(cat " + pidfile + "); sleep 0.5").c_str());
  return ReadFile(pcap);
}

}  // namespace

TEST_CASE("CURVE tiers: exact training, and the wire shows no plaintext", "[cluster][trust]") {
  if (std::system("command -v tcpdump > /dev/null") != 0 || geteuid() != 0) {
    WARN("skipped: needs root and tcpdump (deploy/install-deps.sh installs it)");
    return;
  }
  std::string dir = TempDir();
  const std::string marker = "PartyNameMarkerZanzibar";
  auto run = [&](bool secure) {
    Topology t = Base(4, "3000,17");
    t.party_hosts = {"127.0.77.1", "127.0.77.2", "127.0.77.3"};
    if (secure) {
      t.env["GEOPS_GLOBAL_KEYFILE"] = NewKeyFile(dir, "global.key");
      t.env["GEOPS_LOCAL_KEYFILE"] = NewKeyFile(dir, "local.key");
    }
    return CaptureLoopback(dir, [&] {
      RunExact(t, 4, [&](std::vector<ProcessSpec>& plan) {
        for (auto& p : plan) {
          if (p.tier == "A") p.env["GEOPS_PARTY"] = marker;
        }
      });
    });
  };
  // The control: plain tiers show geops's header magic and the party name.
  std::string plain = run(false);
  REQUIRE(plain.find("GOEP") != std::string::npos);
  REQUIRE(plain.find(marker) != std::string::npos);
  std::remove((dir + "/global.key").c_str());
  std::remove((dir + "/local.key").c_str());
  std::string secure = run(true);
  REQUIRE(secure.size() > 10000);  // the capture did see the run
  REQUIRE(secure.find("GOEP") == std::string::npos);
  REQUIRE(secure.find(marker) == std::string::npos);
}

TEST_CASE("CURVE on the global tier only, parties plain: exact", "[cluster][trust]") {
  std::string dir = TempDir();
  Topology t = Base(6, "5000,3");
  t.env["GEOPS_GLOBAL_KEYFILE"] = NewKeyFile(dir, "global.key");
  RunExact(t, 4);
}

TEST_CASE("a node with the wrong key, or none, is refused on both sides", "[cluster][trust]") {
  std::string dir = TempDir();
  Topology t = Base(3, "100");
  t.env["GEOPS_GLOBAL_KEYFILE"] = NewKeyFile(dir, "global.key");
  t.env["GEOPS_STARTUP_TIMEOUT"] = "8";
  t.env["GEOPS_CONNECT_TIMEOUT"] = "6";
  auto plan = Plan(t);
  REQUIRE(plan.ok());
  bool wrong_key = GENERATE(true, false);
  INFO((wrong_key ? "a wrong key" : "no key"));
  if (wrong_key) {
    Find(*plan, "B.server0").env["GEOPS_GLOBAL_KEYFILE"] = NewKeyFile(dir, "stranger.key");
  } else {
    Find(*plan, "B.server0").env.erase("GEOPS_GLOBAL_KEYFILE");
  }
  absl::Duration took;
  auto results = RunAll(*plan, absl::Seconds(100), &took);
  std::string stranger, scheduler;
  for (const auto& r : results) {
    if (r.name == "B.server0") {
      stranger = ReadFile(r.stderr_path);
      REQUIRE(r.exit_code == 1);
    }
    if (r.name == "global_scheduler") scheduler = ReadFile(r.stderr_path);
  }
  INFO("B.server0:\n" << stranger << "\nglobal scheduler:\n" << scheduler);
  // The receiving side says, in one line, that it refused someone.
  REQUIRE(scheduler.find("refused a connection") != std::string::npos);
  // The refused side names the cause and the variable.
  if (wrong_key) {
    REQUIRE(stranger.find("CURVE handshake failed") != std::string::npos);
  }
  REQUIRE(stranger.find("GEOPS_GLOBAL_KEYFILE") != std::string::npos);
  // Nobody else trained with it: no tier came up with the stranger in it.
  REQUIRE(scheduler.find("global tier up") == std::string::npos);
}

// The same refusal, as whole processes, many times in a row against one
// CURVE scheduler: a start that hangs once in fifteen runs (it did, under
// ThreadSanitizer) fails here instead of passing by luck. Every stranger
// must exit 1 by itself, naming the variable, within a bound.
TEST_CASE("a party server without the key, or with another, exits naming it, every time",
          "[cluster][trust]") {
  std::string dir = TempDir();
  Topology t = Base(3, "100");
  t.env["GEOPS_GLOBAL_KEYFILE"] = NewKeyFile(dir, "global.key");
  t.env["GEOPS_STARTUP_TIMEOUT"] = "600";  // the scheduler outlives every try
  t.env["GEOPS_CONNECT_TIMEOUT"] = "6";
  auto plan = Plan(t);
  REQUIRE(plan.ok());
  RunOptions o;
  o.binary = GEOPS_BINARY;
  o.log_dir = TempDir();
  o.stop_on_failure = false;
  o.timeout = absl::Minutes(10);
  Cluster scheduler(o);
  REQUIRE(scheduler.Start({Find(*plan, "global_scheduler")}).ok());
  const std::string other_key = NewKeyFile(dir, "stranger.key");
  constexpr int kTries = 20;
  for (int i = 0; i < kTries; ++i) {
    const bool wrong_key = i % 2 == 1;
    ProcessSpec stranger = Find(*plan, "B.server0");
    stranger.name = absl::StrCat("B.server0.try", i);
    if (wrong_key) {
      stranger.env["GEOPS_GLOBAL_KEYFILE"] = other_key;
    } else {
      stranger.env.erase("GEOPS_GLOBAL_KEYFILE");
    }
    INFO("try " << i + 1 << " of " << kTries << (wrong_key ? ", another key" : ", no key"));
    // Bounded well below the launcher's timeout: the connect timeout, the
    // flush of what it queued, and a sanitizer's pace.
    Outcome out = Run({stranger}, absl::Seconds(60));
    const ProcessResult& r = out.results.at(0);
    std::string log = ReadFile(r.stderr_path);
    INFO(log);
    REQUIRE(r.signal == 0);
    REQUIRE(r.exit_code == 1);
    REQUIRE(log.find("GEOPS_GLOBAL_KEYFILE") != std::string::npos);
    REQUIRE(log.find("CURVE") != std::string::npos);
  }
  scheduler.StopAll();
  auto results = scheduler.Wait();
  std::string log = ReadFile(results.at(0).stderr_path);
  INFO(log);
  REQUIRE(log.find("refused a connection") != std::string::npos);
  REQUIRE(log.find("global tier up") == std::string::npos);
}

TEST_CASE("WAN connections reset mid-round lose nothing and count nothing twice",
          "[cluster][trust]") {
  if (geteuid() != 0 || std::system("ss -h > /dev/null 2>&1") != 0) {
    WARN("skipped: needs root and ss (iproute2) to reset connections");
    return;
  }
  Topology t = Base(150, "20000,3,400000");
  // Own loopback addresses: the resets must hit this cluster's links only.
  t.party_hosts = {"127.0.79.1", "127.0.79.2", "127.0.79.3"};
  t.env["PS_RESEND_TIMEOUT"] = "300";
  t.env["GEOPS_GLOBAL_HEARTBEAT_TIMEOUT"] = "20";
  t.env["GEOPS_PROGRESS"] = "1";
  auto plan = Plan(t);
  REQUIRE(plan.ok());
  // Generous: under ThreadSanitizer (deploy/checks.sh) a round is ~20x slower.
  auto c = StartUntilRound(*plan, "A.worker0", 5, absl::Seconds(300));
  // Reset every connection between party A and the central party, both
  // ways, again and again while rounds are in flight.
  int resets = 0;
  for (int i = 0; i < 20; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    resets += std::system("ss -K src 127.0.79.2 dst 127.0.79.1 > /dev/null 2>&1") == 0;
    resets += std::system("ss -K src 127.0.79.1 dst 127.0.79.2 > /dev/null 2>&1") == 0;
  }
  REQUIRE(resets > 0);
  Outcome out;
  out.results = c->Wait();
  out.summary = Summarize(out.results);
  DumpFailures(out.results);
  for (const auto& r : out.results) {
    INFO(r.name);
    REQUIRE(r.exit_code == 0);
  }
  REQUIRE(out.summary.mismatches == 0);
  REQUIRE(out.summary.distinct_checksums == 1);
  REQUIRE(out.summary.workers_reporting == 4);
  REQUIRE(out.summary.rounds == 150);
  // Whether a reset cost a message depends on what was in flight at that
  // instant (without PS_RESEND about half of these runs stall); say how
  // many were resent, for the record.
  for (const auto& r : out.results) {
    if (r.name != "A.server0") continue;
    std::string log = ReadFile(r.stderr_path);
    size_t at = log.find("server done:");
    REQUIRE(at != std::string::npos);
    WARN(log.substr(at, log.find('\n', at) - at));
  }
}
