#include "models/moe_layer.h"

#include <ATen/ops/bincount.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/index_add.h>
#include <ATen/ops/index_select.h>
#include <ATen/ops/nonzero.h>
#include <ATen/ops/zeros.h>
#include <torch/csrc/autograd/generated/variable_factories.h>
#include <torch/utils.h>

#include <cmath>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/step_profiler.h"
#include "models/expert_parallel.h"
#include "models/grouped_ffn.h"

namespace moelab {

MoeLayerImpl::MoeLayerImpl(const MoeLayerOptions& options, std::shared_ptr<Router> router)
    : options(options), router_(std::move(router)) {
  TORCH_CHECK(router_ != nullptr, "MoeLayer needs a router");
  const int64_t e = options.num_experts(), d = options.model_dim(), h = options.expert_hidden();
  TORCH_CHECK(e >= 1 && d >= 1 && h >= 1, "MoeLayer: E=", e, " D=", d, " H=", h,
              " must all be >= 1");
  w1 = register_parameter("w1", torch::empty({e, d, h}));
  b1 = register_parameter("b1", torch::empty({e, h}));
  w2 = register_parameter("w2", torch::empty({e, h, d}));
  b2 = register_parameter("b2", torch::empty({e, d}));
  reset_parameters();
  if (options.shared_expert()) {
    shared = register_module(
        "shared", FeedForward(FeedForwardOptions(d, h).activation(options.activation())));
  }
  register_module("router", router_);
}

void MoeLayerImpl::reset_parameters() {
  torch::NoGradGuard no_grad;
  const double in_bound = 1.0 / std::sqrt(double(options.model_dim()));
  const double hidden_bound = 1.0 / std::sqrt(double(options.expert_hidden()));
  w1.uniform_(-in_bound, in_bound);
  b1.uniform_(-in_bound, in_bound);
  w2.uniform_(-hidden_bound, hidden_bound);
  b2.uniform_(-hidden_bound, hidden_bound);
}

int64_t ExpertParameterCount(int64_t model_dim, int64_t expert_hidden) {
  return 2 * model_dim * expert_hidden + expert_hidden + model_dim;
}

int64_t MoeLayerImpl::ParametersPerExpert() const {
  return ExpertParameterCount(options.model_dim(), options.expert_hidden());
}

absl::StatusOr<std::vector<at::Tensor>> MoeLayerImpl::ShardExperts(
    std::shared_ptr<ExpertExchange> exchange) {
  const int64_t num_experts = options.num_experts(), ranks = exchange->size();
  if (exchange_ != nullptr) return absl::FailedPreconditionError("the experts are already sharded");
  if (num_experts % ranks != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "runtime.distributed.expert_parallel: ", ranks, " ranks cannot split ", num_experts,
        " experts evenly (model.moe.num_experts must be a multiple of it)"));
  }
  const int64_t local = num_experts / ranks, first = exchange->rank() * local;
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> kept;
  for (auto& [name, tensor] : {std::pair<const char*, at::Tensor*>{"w1", &w1},
                               std::pair<const char*, at::Tensor*>{"b1", &b1},
                               std::pair<const char*, at::Tensor*>{"w2", &w2},
                               std::pair<const char*, at::Tensor*>{"b2", &b2}}) {
    at::Tensor shard = tensor->slice(0, first, first + local).clone().set_requires_grad(true);
    parameters_[name] = shard;
    *tensor = shard;
    kept.push_back(shard);
  }
  exchange_ = std::move(exchange);
  return kept;
}

MoeLayerOutput MoeLayerImpl::forward(const at::Tensor& hidden, const RoutingContext& context) {
  MoeLayerOutput out;
  {
    ScopedPhase phase(kPhaseRouter);
    out.decision = router_->Route(hidden, context);
  }
  out.output = ApplyExperts(hidden, out.decision.selected, out.decision.combine_weights);
  return out;
}

at::Tensor MoeLayerImpl::ApplyExperts(const at::Tensor& hidden, const at::Tensor& selected,
                                      const at::Tensor& combine_weights) {
  const int64_t num_experts = options.num_experts();
  const int64_t model_dim = options.model_dim();
  TORCH_CHECK(hidden.dim() == 3 && hidden.size(2) == model_dim, "MoeLayer: hidden must be [B, T, ",
              model_dim, "], got ", hidden.sizes());
  TORCH_CHECK(selected.defined() && combine_weights.defined() &&
                  selected.numel() == hidden.size(0) * hidden.size(1) * num_experts &&
                  combine_weights.numel() == selected.numel(),
              "MoeLayer: the router's selected/combine_weights must be [B, T, ", num_experts, "]");
  const int64_t num_tokens = hidden.size(0) * hidden.size(1);
  const at::Tensor x = hidden.reshape({num_tokens, model_dim});  // [N, D]

  // Three contiguous phases for core/step_profiler.h (phases cannot nest):
  // dispatch, the experts' matmuls, combine. Each phase's backward nodes are
  // charged to it by their autograd sequence numbers.
  at::Tensor pair_expert, pair_token;  // [P] each
  at::Tensor x_sorted;                 // [P, D]
  std::vector<int64_t> group_sizes;
  {
    ScopedPhase phase(kPhaseDispatch);
    // (expert, token) pairs in expert-major order: [P, 2].
    const at::Tensor pairs =
        at::nonzero(selected.reshape({num_tokens, num_experts}).to(at::kBool).t());
    pair_expert = pairs.select(1, 0);
    pair_token = pairs.select(1, 1);
    const at::Tensor counts = at::bincount(pair_expert, /*weights=*/{}, num_experts).to(at::kCPU);
    const int64_t* counts_data = counts.data_ptr<int64_t>();
    group_sizes.assign(counts_data, counts_data + num_experts);
    x_sorted = x.index_select(0, pair_token);
  }

  // [P, D]: each pair's expert output; [N, D] the shared expert's.
  at::Tensor y_sorted, shared_output;
  {
    ScopedPhase phase(kPhaseExpertMatmuls);
    y_sorted = exchange_ == nullptr
                   ? GroupedExpertFfn(x_sorted, group_sizes, w1, b1, w2, b2, options.activation())
                   : ExpertParallelFfn(*exchange_, x_sorted, group_sizes, w1, b1, w2, b2,
                                       options.activation());
    if (shared) shared_output = shared->forward(x);
  }

  ScopedPhase phase(kPhaseCombine);
  const at::Tensor pair_weight = combine_weights.reshape({num_tokens * num_experts})
                                     .index_select(0, pair_token * num_experts + pair_expert)
                                     .to(y_sorted.scalar_type());  // [P]
  at::Tensor output = at::zeros({num_tokens, model_dim}, hidden.options())
                          .index_add(0, pair_token, y_sorted * pair_weight.unsqueeze(1));
  if (shared) output = output + shared_output;
  return output.view(hidden.sizes());
}

}  // namespace moelab
