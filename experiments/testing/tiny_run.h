#ifndef MOELAB_EXPERIMENTS_TESTING_TINY_RUN_H_
#define MOELAB_EXPERIMENTS_TESTING_TINY_RUN_H_

// A whole run small enough for the trainer's tests: a 2-layer, D 32
// moe_transformer_lm with 4 experts on 96 synthetic sequences of 16 tokens,
// one thread, a second or two per epoch.
//
//   RunResult result = *RunExperiment(TinyRunSpec(/*epochs=*/2), options);

#include <string>

#include "proto/experiment.pb.h"

namespace moelab {

// The spec with `epochs` epochs; `extra` is text-format fields appended to it
// (fields the spec does not set yet). Resolved and validated; a bad `extra`
// fails the calling test.
ExperimentSpec TinyRunSpec(int epochs, const std::string& extra = "");

}  // namespace moelab

#endif  // MOELAB_EXPERIMENTS_TESTING_TINY_RUN_H_
