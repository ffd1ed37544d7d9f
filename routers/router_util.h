#ifndef MOELAB_ROUTERS_ROUTER_UTIL_H_
#define MOELAB_ROUTERS_ROUTER_UTIL_H_

// Pieces shared by router plugins: top-k selection, the standard auxiliary
// losses, and the gate functions. One implementation each, so that every
// router computes them the same way.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "core/router.h"
#include "proto/experiment.pb.h"

namespace moelab {

// [.., E] bool mask of the k largest entries along the last dimension
// (ties broken towards the lower index, as at::topk does).
at::Tensor TopKMask(const at::Tensor& scores, int64_t k);

// Combine weights: `scores` [.., E] where `selected` [.., E] is true, 0
// elsewhere; with `renormalize`, divided by their sum over the selected
// experts (a token with nothing selected keeps all zeros).
at::Tensor SelectedWeights(const at::Tensor& scores, const at::Tensor& selected, bool renormalize);

// The gate distribution r from logits [.., E]: softmax over experts, or an
// element-wise sigmoid.
at::Tensor ApplyGate(const at::Tensor& logits, GateFunction gate);

// The Switch/Megatron-Core load-balancing loss over N tokens:
// E * sum_e f_e * P_e, equal to 1 under perfect balance (GShard's has the
// same form but counts only each token's first choice in f_e).
// f_e: the share of the pairs in `counted` [N, E] bool that went to expert e
// (the caller chooses the pairs: the tokens' top-k choices before capacity,
// or the pairs kept after it; see AddStandardAuxLosses).
// P_e: the mean over tokens of gate_probs [N, E], with NORMALIZED_OVER_EXPERTS
// (default; UNSPECIFIED means it) first divided by its sum over experts,
// r_e / sum_e' r_e' (equal to r for a softmax gate), or the raw gate with
// RAW_GATE. Gradient flows through P_e only.
// For a sigmoid gate, shifting every logit by c drives the RAW_GATE loss to
// 0 as c -> -inf (every r_e -> 0) without balancing anything. Normalised, P
// is a distribution over experts, so the loss is a P-weighted average of
// E f_e: it lies in [E min_e f_e, E max_e f_e] and is exactly 1 whatever P
// when f is balanced. Under the shift it tends to the softmax gate's loss
// (c -> -inf) and to sum_e f_e = 1 (c -> +inf, sigmoids saturated, P
// uniform), and at every c it is positive, so no shift drives it toward 0;
// but with an imbalanced f it still moves: logits [[2, 0], [1.5, -1]],
// f = [1, 0] give 1.39 at c = 0, 1.80 as c -> -inf and 1.00 at c = +10 (a
// shift up lowers it), the routing one-sided throughout.
at::Tensor LoadBalanceLoss(const at::Tensor& gate_probs, const at::Tensor& counted,
                           LoadBalanceScores scores = NORMALIZED_OVER_EXPERTS);

// spec.load_balance_counting / load_balance_scores with UNSPECIFIED resolved
// to the defaults, CHOICES_BEFORE_CAPACITY and NORMALIZED_OVER_EXPERTS.
LoadBalanceCounting ResolvedLoadBalanceCounting(const RouterSpec& spec);
LoadBalanceScores ResolvedLoadBalanceScores(const RouterSpec& spec);

// Router z-loss (ST-MoE): mean over tokens of logsumexp(logits)^2.
// logits: [N, E].
at::Tensor RouterZLoss(const at::Tensor& logits);

// Appends the load-balance and z losses with the spec's coefficients (each
// only when its coefficient is > 0) to decision->aux_losses, computed from
// decision->logits, gate_probs and selected. `choices` [B, T, E] bool: the
// tokens' top-k choices before any capacity dropped some of them, given by
// routers with a capacity stage (token_choice); f_e counts them under
// CHOICES_BEFORE_CAPACITY, and decision->selected under PAIRS_AFTER_CAPACITY.
// Undefined (routers whose selection has no capacity stage): `selected` is
// counted either way.
void AddStandardAuxLosses(const RouterSpec& spec, RoutingDecision* decision,
                          const at::Tensor& choices = at::Tensor());

// Describes the aggregation p_i = sum_j W_ij r_j of a graph-of-tokens router
// for the analytics: fills decision->aggregation_self_weight [B, T] with W_ii
// and decision->aggregation_effective_neighbours [B, T] with exp(H(W_i)),
// H(W_i) = -sum_j W_ij log W_ij with 0 log 0 = 0 (1 for a one-hot row, n for
// a row uniform over n tokens). Both detached, float32. weights: [B, T, T],
// rows summing to one. `row_entropy` [B, T], when defined, is H(W_i) already
// computed by the caller (attention-aware's chosen-head rows): its exp is
// taken instead of recomputing the entropy over [B, T, T]. Routers call this
// only outside training (context.training false), where it is read.
void DescribeAggregation(const at::Tensor& weights, RoutingDecision* decision,
                         const at::Tensor& row_entropy = at::Tensor());

// Mean entropy (nats) of distributions along the last dimension; zero
// entries contribute zero.
at::Tensor MeanEntropy(const at::Tensor& probs);

// A bias-free linear gate's weight [E, D], drawn from N(0, 0.02^2) with the
// global torch generator (seeded by the experiment seed). For E * D >= 16
// (every real gate) the values are bit-identical to randn({E, D}) * 0.02;
// below, LibTorch 1.13's scalar path may differ in the last bit.
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

// For a plugin's `validate`, routers with a `renormalize` option: with a
// whole top_k of 1, renormalising makes every combine weight w/w = 1, so the
// task loss gives the gate no gradient. `field` is the option's full name
// ("router.token_choice.renormalize"), `weight` the symbol of the weight in
// the message ("r" for the gate, "p" for an aggregate). Call after
// CheckWholeTopK passed.
absl::Status CheckRenormalizeLetsTheGateLearn(const RouterSpec& spec, bool renormalize,
                                              absl::string_view field, absl::string_view weight);

// [.., k] int64 expert indices -> [.., E] bool mask.
at::Tensor IndicesToMask(const at::Tensor& indices, int64_t num_experts);

// The decision of a parameter-free router that sends each token to the
// experts in `experts` [B, T, k] (distinct per token) with weight 1/k:
// logits are zero (no scores exist), gate_probs equal the combine weights,
// dropped is undefined; aux losses per `spec`.
RoutingDecision FixedAssignmentDecision(const RouterSpec& spec, const at::Tensor& experts,
                                        int64_t num_experts);

// The k distinct experts of token `token_id` under `salt`: a splitmix64
// sequence seeded with splitmix64(salt) ^ token_id, each output taken modulo
// E, repeats skipped, in draw order. A fixed hash, the same on every machine.
std::vector<int64_t> HashedExperts(uint64_t token_id, uint64_t salt, int64_t num_experts,
                                   int64_t k);

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
