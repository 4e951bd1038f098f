// The example trainer behind DMLC_ROLE=worker with GEOPS_TRAIN set: real
// training (softmax regression or an MLP on Fashion-MNIST) through the
// parameter servers, so that a WAN policy is judged by the accuracy it
// keeps, not only by the bytes it saves.
//
// The model is a few keys (one per tensor). The master worker sets the
// rule and the initial model; every training worker trains on its shard
// (GEOPS_SHARD=i/N, set by geops-launch), one synchronous round per step:
// it pushes its gradient divided by DMLC_NUM_ALL_WORKER and pulls the
// weights the global servers' sgd rule made of the sum. With
// MXNET_KVSTORE_USE_HFA=1 it takes MXNET_KVSTORE_HFA_K1 local sgd steps
// instead, then pushes its model, and the servers average (the `average`
// rule). Shard 0 prints the test accuracy after every epoch.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "core/base/config.h"
#include "train/model.h"

namespace geops::train {

struct LearnOptions {
  ModelSpec model;
  int epochs = 3;
  int batch = 32;
  double lr = 0.1;
  std::string data_dir = kFashionMnistDir;
  int train_examples = 0;  // the first N of the training set; 0: all 60,000
  int test_examples = 0;   // the first N of the test set; 0: all 10,000
  int shard = 0, shards = 1;
  bool shard_given = false;
  uint64_t seed = 1;
  bool trace = false;     // a line per round (GEOPS_TRAIN_TRACE=1)
  bool lr_decay = true;   // linearly to lr / 10 by the last epoch (GEOPS_LR_DECAY)
};

// GEOPS_TRAIN, GEOPS_EPOCHS, GEOPS_BATCH, GEOPS_LR, GEOPS_DATA_DIR,
// GEOPS_TRAIN_EXAMPLES, GEOPS_TEST_EXAMPLES, GEOPS_SHARD, GEOPS_SEED,
// GEOPS_TRAIN_TRACE;
// nullopt when GEOPS_TRAIN is unset (the synthetic trainer runs instead).
absl::StatusOr<std::optional<LearnOptions>> ParseLearnOptions(const EnvLookup& env);

// Runs one worker (or the master worker) of a training job.
absl::Status RunLearner(const Config& config, const LearnOptions& options);

}  // namespace geops::train
