#ifndef MOELAB_MODELS_MODEL_SPEC_UTIL_H_
#define MOELAB_MODELS_MODEL_SPEC_UTIL_H_

// Pieces shared by the model plugins: presets of the MoE part of ModelSpec,
// its validation, which blocks are MoE blocks, the auxiliary-loss sum, and
// the generator streams the routers are initialised on.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/model.h"
#include "core/router.h"
#include "proto/experiment.pb.h"

namespace moelab {

struct MoeDefaults {
  int32_t num_experts = 0;
  int32_t expert_hidden = 0;
  int32_t moe_every = 1;
  Activation activation = GELU;
};

// Fills the fields of `moe` that are not set explicitly.
void ApplyMoeDefaults(const MoeDefaults& defaults, MoeSpec* moe);

// Checks model.moe for a model of `num_layers` blocks; errors name the field.
absl::Status ValidateMoeSpec(const MoeSpec& moe, int32_t num_layers);

// Block `layer` (0-based) holds an MoE layer iff (layer + 1) % moe_every == 0:
// every block for 1, blocks 1, 3, 5 ... for 2 (V-MoE's "every other layer",
// ending with an MoE block when the depth is even).
bool IsMoeBlock(int64_t layer, int64_t moe_every);

// "model.preset: unknown preset 'x' for model 'm'; known presets: a, b".
absl::Status UnknownPresetError(absl::string_view preset, absl::string_view model_name,
                                const std::vector<std::string>& known);

// Adds every aux loss of `decision` to `total` (a scalar).
void AccumulateAuxLosses(const RoutingDecision& decision, at::Tensor* total);

// What a stack of transformer blocks costs, for Model::Stats().
struct TransformerStackShape {
  int64_t model_dim = 0;
  // Sequence length each token attends over (attention is counted over the
  // full sequence, causal or not).
  int64_t tokens = 0;
  int64_t num_layers = 0;
  int64_t dense_hidden = 0;
  MoeSpec moe;
  double top_k = 0;  // experts per token (average for fractional k)
};

// Forward FLOPs (2 x multiply-adds) per token of the blocks: per block the
// q/k/v/out projections 8 D^2, attention scores and weighted sum 4 T D, and
// a dense FFN 4 D H_dense or an MoE layer: gate 2 D E, k experts 4 D H each
// and the shared expert 4 D H. Biases, norms and softmaxes are not counted.
double TransformerStackFlopsPerToken(const TransformerStackShape& shape);

// Number of MoE blocks.
int64_t NumMoeBlocks(const TransformerStackShape& shape);

// Forward FLOPs of one expert on one token: 4 D H.
double ExpertFlopsPerToken(const TransformerStackShape& shape);

// Parameters of one expert: 2 D H + H + D.
int64_t ParametersPerExpert(const TransformerStackShape& shape);

// Active parameters per token: `total` with each MoE layer's experts counted
// top_k times instead of E times (rounded to the nearest integer).
int64_t ActiveParametersPerToken(const TransformerStackShape& shape, int64_t total);

// Model::Stats() of a transformer stack with `total_parameters`, plus
// `extra_flops_per_token` for what surrounds the stack (embeddings, head).
ModelStats StackStats(const TransformerStackShape& shape, int64_t total_parameters,
                      double extra_flops_per_token);

// Router initialisation on streams of its own.
//
// Every other parameter of a model is drawn from the global CPU generator in
// construction order. If the routers drew from it too, a router that draws
// more random numbers (xmoe's projection, a learnable W_s) or fewer (hash)
// would shift the initialisation of every module built after it (its own
// layer's experts, the later blocks, the head), and two runs with the same
// seed and different routers would differ in far more than the router: the
// rows of a table would not be paired. So each router is built under a
// stream of its own: the global generator is reseeded from (key, layer) for
// the router's construction and then put back exactly as it was, so the rest
// of the model draws what it would draw with no router at all, and two
// routers that draw the same shapes in the same order (token_choice and
// unified: one [E, D] gate from N(0, 0.02)) get identical initial values.

// A key for the router streams of the model about to be built: one 64-bit
// draw from a copy of the global CPU generator (which does not advance), so
// it follows torch::manual_seed and anything drawn since.
uint64_t RouterStreamKey();

// The seed of MoE block `layer`'s router stream: `key` and `layer` mixed
// (SplitMix64), distinct for each layer.
uint64_t RouterStreamSeed(uint64_t key, int64_t layer);

// CreateRouter(spec, dims) with the global CPU generator seeded with
// RouterStreamSeed(key, layer) for the call and restored afterwards (its
// Mersenne Twister state and its cached normal samples), whether or not the
// router is built.
absl::StatusOr<std::shared_ptr<Router>> CreateRouterOnOwnStream(const RouterSpec& spec,
                                                                const RouterDims& dims,
                                                                uint64_t key, int64_t layer);

// Shortcut for an InvalidArgumentError "<field>: <message>".
absl::Status FieldError(absl::string_view field, absl::string_view message);

}  // namespace moelab

#endif  // MOELAB_MODELS_MODEL_SPEC_UTIL_H_
