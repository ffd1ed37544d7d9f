#ifndef MOELAB_ROUTERS_ROUTER_UTIL_H_
#define MOELAB_ROUTERS_ROUTER_UTIL_H_

// Pieces shared by router plugins: top-k selection, the standard auxiliary
// losses, and the gate functions. One implementation each, so that every
// router computes them the same way.

#include <cstdint>

#include <ATen/core/Tensor.h>

#include "core/router.h"
#include "proto/experiment.pb.h"

namespace moelab {

// [.., E] bool mask of the k largest entries along the last dimension
// (ties broken towards the lower index, as at::topk does).
at::Tensor TopKMask(const at::Tensor& scores, int64_t k);

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

}  // namespace moelab

#endif  // MOELAB_ROUTERS_ROUTER_UTIL_H_
