#include "routers/router_util.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/batch_collective.h"

namespace moelab {
namespace {

uint64_t SplitMix64Next(uint64_t* state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

at::Tensor TopKMask(const at::Tensor& scores, int64_t k) {
  TORCH_CHECK(k >= 0 && k <= scores.size(-1), "TopKMask: k=", k, " out of range for ",
              scores.size(-1), " entries");
  at::Tensor mask = at::zeros_like(scores, scores.options().dtype(at::kBool));
  if (k == 0) return mask;
  at::Tensor indices = std::get<1>(at::topk(scores, k, /*dim=*/-1));
  return mask.scatter_(-1, indices, true);
}

at::Tensor SelectedWeights(const at::Tensor& scores, const at::Tensor& selected, bool renormalize) {
  at::Tensor weights = scores * selected.to(scores.scalar_type());
  if (!renormalize) return weights;
  return weights / weights.sum(-1, /*keepdim=*/true).clamp_min(1e-30);
}

at::Tensor ApplyGate(const at::Tensor& logits, GateFunction gate) {
  if (gate == SIGMOID) return at::sigmoid(logits);
  // Softmax in float32 at least, as routers are sensitive to precision.
  return at::softmax(logits, -1, at::kFloat).to(logits.scalar_type());
}

at::Tensor LoadBalanceLoss(const at::Tensor& gate_probs, const at::Tensor& counted,
                           LoadBalanceScores scores) {
  const int64_t num_experts = gate_probs.size(-1);
  at::Tensor probs = gate_probs.reshape({-1, num_experts});  // [N, E]
  TORCH_CHECK(counted.numel() == probs.numel(),
              "LoadBalanceLoss: counted must be [N, E] like gate_probs ", probs.sizes(), ", got ",
              counted.sizes());
  at::Tensor routed = counted.reshape({-1, num_experts}).to(probs.scalar_type());  // [N, E]
  // f_e over the whole batch: under data parallelism the other shards'
  // pairs count too (core/batch_collective.h). P_e below stays this shard's
  // mean; averaging the ranks' gradients, as data parallelism does, then
  // gives exactly the whole batch's gradient.
  const at::Tensor pairs_per_expert = SumOverBatchShards(routed.sum(0));        // [E]
  at::Tensor share = pairs_per_expert / pairs_per_expert.sum().clamp_min(1.0);  // f_e, no gradient
  if (scores != RAW_GATE) {
    // r_e / sum_e' r_e' per token (Megatron-Core's sigmoid-gate form).
    probs = probs / probs.sum(-1, /*keepdim=*/true).clamp_min(1e-30);
  }
  at::Tensor mean_prob = probs.mean(0);  // P_e
  return num_experts * (share * mean_prob).sum();
}

LoadBalanceCounting ResolvedLoadBalanceCounting(const RouterSpec& spec) {
  return spec.load_balance_counting() == LOAD_BALANCE_COUNTING_UNSPECIFIED
             ? CHOICES_BEFORE_CAPACITY
             : spec.load_balance_counting();
}

LoadBalanceScores ResolvedLoadBalanceScores(const RouterSpec& spec) {
  return spec.load_balance_scores() == LOAD_BALANCE_SCORES_UNSPECIFIED ? NORMALIZED_OVER_EXPERTS
                                                                       : spec.load_balance_scores();
}

at::Tensor RouterZLoss(const at::Tensor& logits) {
  at::Tensor lse = at::logsumexp(logits.reshape({-1, logits.size(-1)}).to(at::kFloat), -1);
  return (lse * lse).mean();
}

void AddStandardAuxLosses(const RouterSpec& spec, RoutingDecision* decision,
                          const at::Tensor& choices) {
  if (spec.load_balance_coef() > 0) {
    const at::Tensor& counted =
        choices.defined() && ResolvedLoadBalanceCounting(spec) == CHOICES_BEFORE_CAPACITY
            ? choices
            : decision->selected;
    decision->aux_losses.emplace_back(
        "load_balance",
        spec.load_balance_coef() *
            LoadBalanceLoss(decision->gate_probs, counted, ResolvedLoadBalanceScores(spec)));
  }
  if (spec.z_loss_coef() > 0) {
    decision->aux_losses.emplace_back("z_loss", spec.z_loss_coef() * RouterZLoss(decision->logits));
  }
}

void DescribeAggregation(const at::Tensor& weights, RoutingDecision* decision,
                         const at::Tensor& row_entropy) {
  TORCH_CHECK(weights.dim() == 3 && weights.size(1) == weights.size(2),
              "DescribeAggregation: weights must be [B, T, T], got ", weights.sizes());
  const at::Tensor w = weights.detach().to(at::kFloat);  // [B, T, T]
  decision->aggregation_self_weight =
      w.diagonal(/*offset=*/0, /*dim1=*/1, /*dim2=*/2).contiguous();  // [B, T]
  if (row_entropy.defined()) {
    TORCH_CHECK(row_entropy.sizes() == decision->aggregation_self_weight.sizes(),
                "DescribeAggregation: row_entropy must be [B, T] = ",
                decision->aggregation_self_weight.sizes(), ", got ", row_entropy.sizes());
    decision->aggregation_effective_neighbours = at::exp(row_entropy.detach().to(at::kFloat));
    return;
  }
  // 0 log 0 = 0; the inner `where` keeps log away from 0.
  const at::Tensor positive = w > 0;
  const at::Tensor w_log_w =
      at::where(positive, w * at::log(at::where(positive, w, at::ones_like(w))), at::zeros_like(w));
  decision->aggregation_effective_neighbours = at::exp(-w_log_w.sum(-1));
}

at::Tensor MeanEntropy(const at::Tensor& probs) {
  at::Tensor p = probs.to(at::kFloat);
  at::Tensor terms = at::where(p > 0, -p * at::log(p.clamp_min(1e-30)), at::zeros_like(p));
  return terms.sum(-1).mean();
}

at::Tensor InitGateWeight(int64_t num_experts, int64_t model_dim) {
  return at::empty({num_experts, model_dim}, at::kFloat).normal_(0.0, 0.02);
}

at::Tensor GateLogits(const at::Tensor& hidden, const at::Tensor& gate_weight) {
  return at::matmul(hidden.to(at::kFloat), gate_weight.to(at::kFloat).t());
}

absl::Status CheckWholeTopK(const RouterSpec& spec, const RouterDims& dims) {
  const double k = spec.top_k();
  if (!(k >= 1) || k != std::floor(k) || k > dims.num_experts) {
    return absl::InvalidArgumentError(absl::StrCat("router.top_k: router '", spec.name(),
                                                   "' needs a whole number of experts in [1, ",
                                                   dims.num_experts, "], got ", k));
  }
  return absl::OkStatus();
}

int64_t WholeTopK(const RouterSpec& spec) {
  return static_cast<int64_t>(std::llround(spec.top_k()));
}

absl::Status CheckRenormalizeLetsTheGateLearn(const RouterSpec& spec, bool renormalize,
                                              absl::string_view field, absl::string_view weight) {
  if (!renormalize || WholeTopK(spec) != 1) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(field, ": with top_k = 1 every combine weight is ", weight, "/", weight,
                   " = 1, so the task loss gives the gate zero gradient (only the "
                   "load-balance loss would train it); set renormalize: false "
                   "(Switch-style) or top_k >= 2"));
}

at::Tensor IndicesToMask(const at::Tensor& indices, int64_t num_experts) {
  std::vector<int64_t> shape = indices.sizes().vec();
  shape.back() = num_experts;
  return at::zeros(shape, indices.options().dtype(at::kBool)).scatter_(-1, indices, true);
}

RoutingDecision FixedAssignmentDecision(const RouterSpec& spec, const at::Tensor& experts,
                                        int64_t num_experts) {
  const int64_t k = experts.size(-1);
  RoutingDecision d;
  d.selected = IndicesToMask(experts, num_experts);
  d.combine_weights = d.selected.to(at::kFloat) * (1.0 / k);
  d.gate_probs = d.combine_weights;
  d.logits = at::zeros_like(d.combine_weights);
  AddStandardAuxLosses(spec, &d);
  return d;
}

std::vector<int64_t> HashedExperts(uint64_t token_id, uint64_t salt, int64_t num_experts,
                                   int64_t k) {
  TORCH_CHECK(k >= 0 && k <= num_experts, "HashedExperts: k=", k, " out of range for ", num_experts,
              " experts");
  uint64_t salt_state = salt;
  uint64_t state = SplitMix64Next(&salt_state) ^ token_id;
  std::vector<int64_t> experts;
  experts.reserve(k);
  while (static_cast<int64_t>(experts.size()) < k) {
    const int64_t e =
        static_cast<int64_t>(SplitMix64Next(&state) % static_cast<uint64_t>(num_experts));
    if (std::find(experts.begin(), experts.end(), e) == experts.end()) {
      experts.push_back(e);
    }
  }
  return experts;
}

HashedExpertTable::HashedExpertTable(int64_t num_experts, int64_t k)
    : num_experts_(num_experts), k_(k) {
  TORCH_CHECK(k >= 1 && k <= num_experts, "HashedExpertTable: k=", k, " out of range for ",
              num_experts, " experts");
}

at::Tensor HashedExpertTable::Lookup(const at::Tensor& ids, uint64_t salt) {
  TORCH_CHECK(ids.defined() && at::isIntegralType(ids.scalar_type(), /*includeBool=*/false),
              "HashedExpertTable: token ids must be a defined integer tensor");
  const at::Tensor token_ids = ids.to(at::kLong);
  if (token_ids.numel() == 0) {
    std::vector<int64_t> shape = token_ids.sizes().vec();
    shape.push_back(k_);
    return at::empty(shape, token_ids.options());
  }
  const int64_t min_id = token_ids.min().item<int64_t>();
  const int64_t max_id = token_ids.max().item<int64_t>();
  TORCH_CHECK(min_id >= 0, "HashedExpertTable: token ids must be >= 0, got ", min_id);
  std::vector<int64_t> shape = token_ids.sizes().vec();
  shape.push_back(k_);
  at::Tensor flat_ids = token_ids.reshape({-1}).to(at::kCPU);
  // Ids far beyond any vocabulary would make the table huge: hash the
  // batch's distinct ids directly instead.
  constexpr int64_t kMaxTableRows = int64_t{1} << 22;
  if (max_id >= kMaxTableRows) {
    auto [distinct, inverse, counts] =
        at::_unique2(flat_ids, /*sorted=*/false, /*return_inverse=*/true);
    at::Tensor rows = at::empty({distinct.numel(), k_}, at::kLong);
    const int64_t* id = distinct.data_ptr<int64_t>();
    int64_t* data = rows.data_ptr<int64_t>();
    for (int64_t i = 0; i < distinct.numel(); ++i) {
      const std::vector<int64_t> experts =
          HashedExperts(static_cast<uint64_t>(id[i]), salt, num_experts_, k_);
      std::copy(experts.begin(), experts.end(), data + i * k_);
    }
    return rows.index_select(0, inverse.reshape({-1})).reshape(shape).to(token_ids.device());
  }
  const int64_t rows = table_.defined() ? table_.size(0) : 0;
  if (salt != salt_ || max_id >= rows) {
    const int64_t keep = salt == salt_ ? rows : 0;
    const int64_t new_rows = std::min(std::max(max_id + 1, 2 * rows), kMaxTableRows);
    at::Tensor grown = at::empty({new_rows, k_}, at::kLong);
    if (keep > 0) grown.narrow(0, 0, keep).copy_(table_);
    int64_t* data = grown.data_ptr<int64_t>();
    // Runs once per new vocabulary entry, never per token of a batch.
    for (int64_t id = keep; id < new_rows; ++id) {
      const std::vector<int64_t> experts =
          HashedExperts(static_cast<uint64_t>(id), salt, num_experts_, k_);
      std::copy(experts.begin(), experts.end(), data + id * k_);
    }
    table_ = grown;
    salt_ = salt;
  }
  return table_.index_select(0, flat_ids).reshape(shape).to(token_ids.device());
}

}  // namespace moelab
