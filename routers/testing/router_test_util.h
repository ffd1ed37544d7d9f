#ifndef MOELAB_ROUTERS_TESTING_ROUTER_TEST_UTIL_H_
#define MOELAB_ROUTERS_TESTING_ROUTER_TEST_UTIL_H_

// Helpers for router tests: build a registered router the way a run does
// (resolve, validate, create) and set its parameters by name.

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/router.h"
#include "proto/experiment.pb.h"

namespace moelab {
namespace testing {

// Resolves `spec` with the registered router's `resolve`, then validates and
// creates it through CreateRouter.
inline absl::StatusOr<std::shared_ptr<Router>> ResolveAndCreate(RouterSpec spec,
                                                                const RouterDims& dims) {
  absl::StatusOr<const RouterRegistration*> entry = RouterRegistry().Find(spec.name());
  if (!entry.ok()) return entry.status();
  ResolveRouterSpec(**entry, &spec, dims);
  return CreateRouter(spec, dims);
}

// Overwrites the router's parameter `name` with `value` (same shape).
inline void SetParameter(Router& router, const std::string& name, const at::Tensor& value) {
  at::Tensor* parameter = router.named_parameters().find(name);
  ASSERT_NE(parameter, nullptr) << "no parameter named " << name;
  torch::NoGradGuard no_grad;
  parameter->copy_(value);
}

inline at::Tensor Parameter(Router& router, const std::string& name) {
  at::Tensor* parameter = router.named_parameters().find(name);
  TORCH_CHECK(parameter != nullptr, "no parameter named ", name);
  return *parameter;
}

// A bool tensor from 0/1 values (at::tensor has no bool overload).
inline at::Tensor Mask(const std::vector<int64_t>& values, at::IntArrayRef shape) {
  return at::tensor(values).reshape(shape).to(at::kBool);
}

// Asserts |actual - expected| <= tolerance elementwise, in row-major order.
inline void ExpectTensorNear(const at::Tensor& actual, const std::vector<double>& expected,
                             double tolerance = 1e-6) {
  at::Tensor flat = actual.detach().reshape({-1}).to(at::kDouble).contiguous();
  ASSERT_EQ(flat.numel(), static_cast<int64_t>(expected.size()));
  const double* data = flat.data_ptr<double>();
  for (int64_t i = 0; i < flat.numel(); ++i) {
    EXPECT_NEAR(data[i], expected[i], tolerance) << "at flat index " << i;
  }
}

inline RoutingContext Context(bool training, bool causal = false) {
  RoutingContext context;
  context.training = training;
  context.causal = causal;
  return context;
}

// The documented invariants every decision keeps: shapes, combine weights
// finite, non-negative and zero outside `selected`.
inline void ExpectWellFormed(const RoutingDecision& d, int64_t batch, int64_t tokens,
                             int64_t experts) {
  const std::vector<int64_t> shape = {batch, tokens, experts};
  ASSERT_TRUE(d.logits.defined());
  ASSERT_TRUE(d.gate_probs.defined());
  ASSERT_TRUE(d.selected.defined());
  ASSERT_TRUE(d.combine_weights.defined());
  EXPECT_EQ(d.logits.sizes().vec(), shape);
  EXPECT_EQ(d.gate_probs.sizes().vec(), shape);
  EXPECT_EQ(d.selected.sizes().vec(), shape);
  EXPECT_EQ(d.combine_weights.sizes().vec(), shape);
  EXPECT_EQ(d.selected.scalar_type(), at::kBool);
  at::Tensor w = d.combine_weights.detach();
  EXPECT_TRUE(at::isfinite(w).all().item<bool>());
  EXPECT_TRUE((w >= 0).all().item<bool>());
  EXPECT_TRUE((w.masked_select(~d.selected) == 0).all().item<bool>());
  if (d.dropped.defined()) {
    EXPECT_EQ(d.dropped.sizes().vec(), (std::vector<int64_t>{batch, tokens}));
    EXPECT_EQ(d.dropped.scalar_type(), at::kBool);
  }
}

// Asserts that `actual` is `expected`'s decision bit for bit: logits, gate
// probabilities, selection, combine weights, drops and auxiliary losses, and
// that its p (aggregated_probs) is `expected`'s r: the check of an
// aggregation ablation (p = r) against token choice.
inline void ExpectSameDecisionWithPEqualR(const RoutingDecision& actual,
                                          const RoutingDecision& expected) {
  EXPECT_TRUE(at::equal(actual.logits, expected.logits));
  EXPECT_TRUE(at::equal(actual.gate_probs, expected.gate_probs));
  ASSERT_TRUE(actual.aggregated_probs.defined());
  EXPECT_TRUE(at::equal(actual.aggregated_probs, expected.gate_probs));
  EXPECT_TRUE(at::equal(actual.aggregated_probs, actual.gate_probs));
  EXPECT_TRUE(at::equal(actual.selected, expected.selected));
  EXPECT_TRUE(at::equal(actual.combine_weights, expected.combine_weights));
  EXPECT_EQ(actual.dropped.defined(), expected.dropped.defined());
  ASSERT_EQ(actual.aux_losses.size(), expected.aux_losses.size());
  for (size_t i = 0; i < expected.aux_losses.size(); ++i) {
    EXPECT_EQ(actual.aux_losses[i].first, expected.aux_losses[i].first);
    EXPECT_TRUE(at::equal(actual.aux_losses[i].second, expected.aux_losses[i].second))
        << actual.aux_losses[i].first << ": " << actual.aux_losses[i].second << " vs "
        << expected.aux_losses[i].second;
  }
}

}  // namespace testing
}  // namespace moelab

#endif  // MOELAB_ROUTERS_TESTING_ROUTER_TEST_UTIL_H_
