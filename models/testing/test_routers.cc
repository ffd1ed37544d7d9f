#include "models/testing/test_routers.h"

#include <ATen/ops/matmul.h>
#include <ATen/ops/softmax.h>
#include <ATen/ops/zeros_like.h>
#include <torch/csrc/autograd/generated/variable_factories.h>
#include <torch/utils.h>

#include <cmath>
#include <memory>
#include <utility>

#include "routers/router_util.h"

namespace moelab {

TestRouter::TestRouter(int64_t model_dim, int64_t num_experts, int64_t top_k, bool needs_attention,
                       RouterSpec spec)
    : top_k_(top_k), needs_attention_(needs_attention), spec_(std::move(spec)) {
  torch::NoGradGuard no_grad;
  gate_weight = register_parameter("gate_weight", torch::randn({num_experts, model_dim}) * 0.5);
}

RoutingDecision TestRouter::Route(const at::Tensor& hidden, const RoutingContext& context) {
  last_hidden_ = hidden;
  last_context_ = context;
  RoutingDecision d;
  d.logits = at::matmul(hidden, gate_weight.t());  // [B, T, E]
  d.gate_probs = at::softmax(d.logits, -1);
  d.selected = fixed_.defined() ? fixed_.to(at::kBool) : TopKMask(d.gate_probs.detach(), top_k_);
  d.combine_weights = d.gate_probs * d.selected.to(d.gate_probs.scalar_type());
  AddStandardAuxLosses(spec_, &d);
  return d;
}

namespace {

std::shared_ptr<Router> MakeTestRouter(const RouterSpec& spec, const RouterDims& dims,
                                       bool needs_attention) {
  return std::make_shared<TestRouter>(dims.model_dim, dims.num_experts,
                                      static_cast<int64_t>(std::llround(spec.top_k())),
                                      needs_attention, spec);
}

MOELAB_REGISTER_ROUTER("testing_models_top_k",
                       {.description = "test only (models/): linear softmax gate, top-k",
                        .validate = [](const RouterSpec&,
                                       const RouterDims&) { return absl::OkStatus(); },
                        .create =
                            [](const RouterSpec& spec, const RouterDims& dims) {
                              return MakeTestRouter(spec, dims, /*needs_attention=*/false);
                            }});

MOELAB_REGISTER_ROUTER("testing_models_attention",
                       {.description = "test only (models/): top-k router that asks for the "
                                       "attention probabilities",
                        .validate = [](const RouterSpec&,
                                       const RouterDims&) { return absl::OkStatus(); },
                        .create =
                            [](const RouterSpec& spec, const RouterDims& dims) {
                              return MakeTestRouter(spec, dims, /*needs_attention=*/true);
                            }});

}  // namespace
}  // namespace moelab
