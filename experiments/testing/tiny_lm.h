#ifndef MOELAB_EXPERIMENTS_TESTING_TINY_LM_H_
#define MOELAB_EXPERIMENTS_TESTING_TINY_LM_H_

// A moe_transformer_lm small enough to build once per registered router in a
// test: 2 layers of D 32 with 2 heads, every block an MoE of 4 experts of
// width 32, no dropout, a 64-token vocabulary and 16-token sequences.
//
//   ExperimentSpec spec = TinyMoeLmSpec("token_choice", /*top_k=*/2);
//   absl::StatusOr<std::shared_ptr<Model>> model = MakeTinyMoeLm(&spec, /*seed=*/1);
//   ModelOutput out = (*model)->Forward(TinyLmBatch(/*seed=*/2), {});

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "core/dataset.h"
#include "core/model.h"
#include "proto/experiment.pb.h"

namespace moelab {

inline constexpr int64_t kTinyVocab = 64, kTinyTokens = 16, kTinyBatch = 4;
inline constexpr int64_t kTinyDim = 32, kTinyLayers = 2, kTinyHeads = 2, kTinyExperts = 4;

// The model and a router named `router` at `top_k`; other router options at
// their defaults (unresolved).
ExperimentSpec TinyMoeLmSpec(const std::string& router, double top_k);

// Resolves `spec`'s model and router options in place, as spec resolution
// would, seeds the global generator with `seed` and builds the model.
absl::StatusOr<std::shared_ptr<Model>> MakeTinyMoeLm(ExperimentSpec* spec, uint64_t seed);

// [kTinyBatch, kTinyTokens] random inputs and targets drawn from `seed`.
Batch TinyLmBatch(uint64_t seed);

}  // namespace moelab

#endif  // MOELAB_EXPERIMENTS_TESTING_TINY_LM_H_
