#include "routers/router_util.h"

#include <ATen/ATen.h>

namespace moelab {

at::Tensor TopKMask(const at::Tensor& scores, int64_t k) {
  TORCH_CHECK(k >= 0 && k <= scores.size(-1), "TopKMask: k=", k,
              " out of range for ", scores.size(-1), " entries");
  at::Tensor mask = at::zeros_like(scores, scores.options().dtype(at::kBool));
  if (k == 0) return mask;
  at::Tensor indices = std::get<1>(at::topk(scores, k, /*dim=*/-1));
  return mask.scatter_(-1, indices, true);
}

at::Tensor ApplyGate(const at::Tensor& logits, GateFunction gate) {
  if (gate == SIGMOID) return at::sigmoid(logits);
  // Softmax in float32 at least, as routers are sensitive to precision.
  return at::softmax(logits, -1, at::kFloat).to(logits.scalar_type());
}

at::Tensor LoadBalanceLoss(const at::Tensor& gate_probs,
                           const at::Tensor& selected) {
  const int64_t num_experts = gate_probs.size(-1);
  at::Tensor probs = gate_probs.reshape({-1, num_experts});
  at::Tensor routed = selected.reshape({-1, num_experts}).to(probs.scalar_type());
  at::Tensor pairs = routed.sum().clamp_min(1.0);
  at::Tensor share = routed.sum(0) / pairs;  // f_e, no gradient
  at::Tensor mean_prob = probs.mean(0);      // P_e
  return num_experts * (share * mean_prob).sum();
}

at::Tensor RouterZLoss(const at::Tensor& logits) {
  at::Tensor lse = at::logsumexp(logits.reshape({-1, logits.size(-1)}).to(at::kFloat), -1);
  return (lse * lse).mean();
}

void AddStandardAuxLosses(const RouterSpec& spec, RoutingDecision* decision) {
  if (spec.load_balance_coef() > 0) {
    decision->aux_losses.emplace_back(
        "load_balance", spec.load_balance_coef() *
                            LoadBalanceLoss(decision->gate_probs, decision->selected));
  }
  if (spec.z_loss_coef() > 0) {
    decision->aux_losses.emplace_back(
        "z_loss", spec.z_loss_coef() * RouterZLoss(decision->logits));
  }
}

at::Tensor MeanEntropy(const at::Tensor& probs) {
  at::Tensor p = probs.to(at::kFloat);
  at::Tensor terms = at::where(p > 0, -p * at::log(p.clamp_min(1e-30)),
                               at::zeros_like(p));
  return terms.sum(-1).mean();
}

}  // namespace moelab
