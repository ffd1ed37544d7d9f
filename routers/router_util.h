#ifndef MOELAB_ROUTERS_ROUTER_UTIL_H_
#define MOELAB_ROUTERS_ROUTER_UTIL_H_

// Pieces shared by router plugins: top-k selection, the standard auxiliary
// losses, and the gate functions. One implementation each, so that every
// router computes them the same way.

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "core/router.h"
#include "proto/experiment.pb.h"

namespace moelab {

// [.., E] bool mask of the k largest entries along the last dimension
// (ties broken towards the lower index, as at::topk does).
at::Tensor TopKMask(const at::Tensor& scores, int64_t k);

// Combine weights: `scores` [.., E] where `selected` [.., E] is true, 0
// elsewhere; with `renormalize`, divided by their sum over the selected
// experts (a token with nothing selected keeps all zeros).
at::Tensor SelectedWeights(const at::Tensor& scores, const at::Tensor& selected,
                           bool renormalize);

// The gate distribution r from logits [.., E]: softmax over experts, or an
// element-wise sigmoid.
at::Tensor ApplyGate(const at::Tensor& logits, GateFunction gate);

// Switch/GShard load-balancing loss over N tokens: E * sum_e f_e * P_e, where
// f_e is the share of routed (token, expert) pairs that went to expert e and
// P_e the mean gate probability of e. Equals 1 under perfect balance.
// gate_probs: [N, E]; selected: [N, E] bool. Gradient flows through P_e only.
at::Tensor LoadBalanceLoss(const at::Tensor& gate_probs,
                           const at::Tensor& selected);

// Router z-loss (ST-MoE): mean over tokens of logsumexp(logits)^2.
// logits: [N, E].
at::Tensor RouterZLoss(const at::Tensor& logits);

// Appends the load-balance and z losses with the spec's coefficients (each
// only when its coefficient is > 0) to decision->aux_losses, computed from
// decision->logits, gate_probs and selected.
void AddStandardAuxLosses(const RouterSpec& spec, RoutingDecision* decision);

// Mean entropy (nats) of distributions along the last dimension; zero
// entries contribute zero.
at::Tensor MeanEntropy(const at::Tensor& probs);

// A bias-free linear gate's weight [E, D], drawn from N(0, 0.02^2) with the
// global torch generator (seeded by the experiment seed).
at::Tensor InitGateWeight(int64_t num_experts, int64_t model_dim);

// logits = hidden @ gate_weight^T in float32: hidden [B, T, D], gate_weight
// [E, D] -> [B, T, E]. Routing decisions are sensitive to precision.
at::Tensor GateLogits(const at::Tensor& hidden, const at::Tensor& gate_weight);

// For a plugin's `validate`: spec.top_k must be a whole number of experts in
// [1, E] (core checks the same for specs it loads; routers built directly by
// CreateRouter get the check here).
absl::Status CheckWholeTopK(const RouterSpec& spec, const RouterDims& dims);

// spec.top_k as a count of experts; call after CheckWholeTopK passed.
int64_t WholeTopK(const RouterSpec& spec);

// [.., k] int64 expert indices -> [.., E] bool mask.
at::Tensor IndicesToMask(const at::Tensor& indices, int64_t num_experts);

// The decision of a parameter-free router that sends each token to the
// experts in `experts` [B, T, k] (distinct per token) with weight 1/k:
// logits are zero (no scores exist), gate_probs equal the combine weights,
// dropped is undefined; aux losses per `spec`.
RoutingDecision FixedAssignmentDecision(const RouterSpec& spec,
                                        const at::Tensor& experts,
                                        int64_t num_experts);

// The k distinct experts of token `token_id` under `salt`: a splitmix64
// sequence seeded with splitmix64(salt) ^ token_id, each output taken modulo
// E, repeats skipped, in draw order. A fixed hash, the same on every machine.
std::vector<int64_t> HashedExperts(uint64_t token_id, uint64_t salt,
                                   int64_t num_experts, int64_t k);

// HashedExperts for whole batches: a table over token ids 0..V-1, grown
// (doubling) the first time a larger id appears, so a forward pass is one
// index_select and the hash runs once per vocabulary entry, not per token.
// Ids of 2^22 and more are hashed per batch instead of tabulated.
class HashedExpertTable {
 public:
  HashedExpertTable(int64_t num_experts, int64_t k);

  // ids [B, T] integers, each >= 0 -> [B, T, k] int64 expert indices.
  at::Tensor Lookup(const at::Tensor& ids, uint64_t salt);

 private:
  int64_t num_experts_;
  int64_t k_;
  uint64_t salt_ = 0;
  // [V, k] int64 on the CPU; undefined until the first Lookup.
  at::Tensor table_;
};

}  // namespace moelab

#endif  // MOELAB_ROUTERS_ROUTER_UTIL_H_
