#include "routers/sinkhorn.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <cmath>
#include <memory>

#include "absl/strings/str_cat.h"
#include "routers/router_util.h"

namespace moelab {

SinkhornOptions ResolvedSinkhornOptions(const RouterSpec& spec) {
  SinkhornOptions options = spec.sinkhorn();
  if (!options.has_iterations()) options.set_iterations(8);
  return options;
}

at::Tensor SinkhornLogBalance(const at::Tensor& logits, int64_t iterations) {
  const int64_t num_tokens = logits.size(0), num_experts = logits.size(1);
  const double log_rows = std::log(static_cast<double>(num_tokens));
  const double log_columns = std::log(static_cast<double>(num_experts));
  at::Tensor log_column_scale = at::zeros({1, num_experts}, logits.options());
  at::Tensor log_row_scale;
  for (int64_t i = 0; i < iterations; ++i) {
    log_row_scale = -log_rows - at::logsumexp(logits + log_column_scale, 1, true);
    log_column_scale = -log_columns - at::logsumexp(logits + log_row_scale, 0, true);
  }
  return logits + log_row_scale + log_column_scale;
}

SinkhornRouter::SinkhornRouter(const RouterSpec& spec, const RouterDims& dims)
    : spec_(spec),
      iterations_(ResolvedSinkhornOptions(spec).iterations()),
      num_experts_(dims.num_experts),
      top_k_(WholeTopK(spec)) {
  gate_weight_ =
      register_parameter("gate_weight", InitGateWeight(dims.num_experts, dims.model_dim));
}

RoutingDecision SinkhornRouter::Route(const at::Tensor& hidden, const RoutingContext& context) {
  RoutingDecision d;
  d.logits = GateLogits(hidden, gate_weight_);  // [B, T, E]
  if (context.training) {
    torch::NoGradGuard no_grad;
    at::Tensor balanced =
        SinkhornLogBalance(d.logits.detach().reshape({-1, num_experts_}), iterations_);
    d.selected = TopKMask(balanced, top_k_).reshape(d.logits.sizes());
  } else {
    d.selected = TopKMask(d.logits.detach(), top_k_);
  }
  d.gate_probs = ApplyGate(d.logits, SOFTMAX);
  d.combine_weights = at::sigmoid(d.logits) * d.selected.to(d.logits.scalar_type());
  AddStandardAuxLosses(spec_, &d);
  return d;
}

namespace {

absl::Status ValidateSinkhorn(const RouterSpec& spec, const RouterDims& dims) {
  if (absl::Status s = CheckWholeTopK(spec, dims); !s.ok()) return s;
  const int iterations = ResolvedSinkhornOptions(spec).iterations();
  if (iterations < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("router.sinkhorn.iterations: must be >= 1, got ", iterations));
  }
  return absl::OkStatus();
}

MOELAB_REGISTER_ROUTER("sinkhorn",
                       {.options = RouterSpec::kSinkhorn,
                        .description = "top-k of the Sinkhorn-balanced scores of the batch in "
                                       "training, plain top-k in evaluation; sigmoid weights "
                                       "(BASE/Megatron style)",
                        .resolve =
                            [](RouterSpec* spec, const RouterDims&) {
                              *spec->mutable_sinkhorn() = ResolvedSinkhornOptions(*spec);
                            },
                        .validate = ValidateSinkhorn,
                        .create = [](const RouterSpec& spec,
                                     const RouterDims& dims) -> std::shared_ptr<Router> {
                          return std::make_shared<SinkhornRouter>(spec, dims);
                        }});

}  // namespace
}  // namespace moelab
