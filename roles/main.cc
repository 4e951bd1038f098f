// geops: one executable for every role; the DMLC_* environment picks it.
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_format.h"
#include "core/base/config.h"
#include "core/base/log.h"
#include "roles/roles.h"
#include "train/learner.h"
#include "core/transport/curve.h"

int main(int argc, char** argv) {
  bool check_only = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--check-config") == 0) {
      // Parse the environment as a real start would, then stop: for
      // deployment recipes (containers, manifests) to test their env.
      check_only = true;
      continue;
    }
    if (std::strcmp(argv[i], "--gen-keyfile") == 0) {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "geops: --gen-keyfile needs a file name\n");
        return 2;
      }
      if (auto s = geops::WriteCurveKeyFile(argv[i + 1]); !s.ok()) {
        std::fprintf(stderr, "geops: %s\n", std::string(s.message()).c_str());
        return 1;
      }
      std::printf("wrote a cluster key to %s: give every process of the tier this file (e.g. "
                  "GEOPS_GLOBAL_KEYFILE=%s)\n",
                  argv[i + 1], argv[i + 1]);
      return 0;
    }
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
      std::fputs(geops::ConfigHelp().c_str(), stdout);
      return 0;
    }
    std::fprintf(stderr, "geops: unknown argument \"%s\" (the role comes from DMLC_ROLE; see "
                         "geops --help)\n", argv[i]);
    return 2;
  }
  // A peer that vanishes must surface as an error, not kill us with SIGPIPE.
  std::signal(SIGPIPE, SIG_IGN);

  auto config = geops::ParseConfig(geops::ProcessEnv());
  if (!config.ok()) {
    std::fprintf(stderr, "geops: configuration error: %s\n",
                 std::string(config.status().message()).c_str());
    return 2;
  }
  geops::TrainerOptions trainer;
  std::optional<geops::train::LearnOptions> learn;
  if (config->role == geops::Role::kWorker) {
    auto l = geops::train::ParseLearnOptions(geops::ProcessEnv());
    if (!l.ok()) {
      std::fprintf(stderr, "geops: configuration error: %s\n",
                   std::string(l.status().message()).c_str());
      return 2;
    }
    learn = *l;
    auto t = geops::ParseTrainerOptions(geops::ProcessEnv());
    if (!t.ok()) {
      std::fprintf(stderr, "geops: configuration error: %s\n",
                   std::string(t.status().message()).c_str());
      return 2;
    }
    trainer = *t;
  }
  if (check_only) {
    std::printf("geops: configuration ok: %s%s\n", config->Describe().c_str(),
                learn ? " (example trainer)" : "");
    for (const auto& w : config->warnings) std::printf("geops: note: %s\n", w.c_str());
    return 0;
  }
  geops::log::SetVerbosity(config->verbose);
  geops::log::SetName(absl::StrFormat("%s pid %d", config->Describe(), getpid()));
  for (const auto& w : config->warnings) geops::log::Warn("%s", w);

  absl::Status status;
  if (config->global_role == geops::Role::kScheduler ||
      config->role == geops::Role::kScheduler) {
    status = geops::RunScheduler(*config);
  } else if (config->role == geops::Role::kServer) {
    status = geops::RunServer(*config);
  } else if (learn) {
    status = geops::train::RunLearner(*config, *learn);
  } else {
    status = geops::RunTrainer(*config, trainer);
  }
  if (!status.ok()) {
    geops::log::Error("exiting with an error: %s", status.message());
    return 1;
  }
  return 0;
}
