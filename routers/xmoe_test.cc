#include "routers/xmoe.h"

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <vector>

#include "routers/testing/router_test_util.h"

namespace moelab {
namespace {

using ::moelab::testing::Context;
using ::moelab::testing::ExpectTensorNear;
using ::moelab::testing::ExpectWellFormed;
using ::moelab::testing::Parameter;
using ::moelab::testing::ResolveAndCreate;
using ::moelab::testing::SetParameter;
using ::testing::HasSubstr;

RouterSpec Spec(double k, int projection_dim = 2, float temperature = 0.5f) {
  RouterSpec spec;
  spec.set_name("xmoe");
  spec.set_top_k(k);
  spec.mutable_xmoe()->set_projection_dim(projection_dim);
  spec.mutable_xmoe()->set_initial_temperature(temperature);
  return spec;
}

// D = P = 2, E = 3: projection 2I, expert embeddings (2, 0), (0, 3), (1, 1),
// so the cosines of the three tokens below are
//   (3, 4):  [3/5, 4/5, 7/(5 sqrt 2)]
//   (-1, 0): [-1, 0, -1/sqrt 2]
//   (1, -2): [1/sqrt 5, -2/sqrt 5, -1/sqrt 10].
std::shared_ptr<Router> HandRouter(double k, float temperature) {
  auto router = ResolveAndCreate(Spec(k, 2, temperature), RouterDims{2, 3, 2, true});
  EXPECT_TRUE(router.ok()) << router.status();
  SetParameter(**router, "projection", 2 * at::eye(2));
  SetParameter(**router, "expert_embeddings",
               at::tensor({2., 0., 0., 3., 1., 1.}).to(at::kFloat).reshape({3, 2}));
  return *router;
}

at::Tensor HandHidden() {
  return at::tensor({3., 4., -1., 0., 1., -2.}).to(at::kFloat).reshape({1, 3, 2});
}

std::vector<double> HandCosines() {
  return {.6,
          .8,
          7 / (5 * std::sqrt(2.)),
          -1,
          0,
          -1 / std::sqrt(2.),
          1 / std::sqrt(5.),
          -2 / std::sqrt(5.),
          -1 / std::sqrt(10.)};
}

std::vector<double> RowSoftmax(const std::vector<double>& logits, int width) {
  std::vector<double> r(logits.size());
  for (size_t row = 0; row < logits.size(); row += width) {
    double total = 0;
    for (int e = 0; e < width; ++e) total += std::exp(logits[row + e]);
    for (int e = 0; e < width; ++e) r[row + e] = std::exp(logits[row + e]) / total;
  }
  return r;
}

TEST(XMoeTest, CosineOverTemperatureByHand) {
  auto router = HandRouter(2, 0.5f);
  RoutingDecision d = router->Route(HandHidden(), Context(false));
  ExpectWellFormed(d, 1, 3, 3);
  std::vector<double> logits = HandCosines();
  for (double& l : logits) l /= 0.5;
  ExpectTensorNear(d.logits, logits);
  std::vector<double> r = RowSoftmax(logits, 3);
  ExpectTensorNear(d.gate_probs, r);
  // Top-2: t0 {e2, e1}, t1 {e1, e2}, t2 {e0, e2}.
  ExpectTensorNear(d.combine_weights, {0, r[1], r[2], 0, r[4], r[5], r[6], 0, r[8]});
}

TEST(XMoeTest, TemperatureIsFlooredAtOneHundredth) {
  auto router = HandRouter(1, 0.5f);
  SetParameter(*router, "temperature", at::full({}, 0.001f));
  RoutingDecision d = router->Route(HandHidden(), Context(false));
  std::vector<double> logits = HandCosines();
  for (double& l : logits) l /= 0.01;
  ExpectTensorNear(d.logits, logits, 1e-4);
}

TEST(XMoeTest, GradientsReachEveryParameterIncludingTemperature) {
  torch::manual_seed(3);
  RouterSpec spec = Spec(2, 4, 0.07f);
  spec.set_load_balance_coef(0.01f);
  auto router = ResolveAndCreate(spec, RouterDims{8, 4, 2, true});
  ASSERT_TRUE(router.ok()) << router.status();
  EXPECT_FLOAT_EQ(Parameter(**router, "temperature").item<float>(), 0.07f);
  EXPECT_EQ(Parameter(**router, "temperature").dim(), 0);
  EXPECT_EQ(Parameter(**router, "projection").sizes().vec(), (std::vector<int64_t>{4, 8}));
  EXPECT_EQ(Parameter(**router, "expert_embeddings").sizes().vec(), (std::vector<int64_t>{4, 4}));
  RoutingDecision d = (*router)->Route(at::randn({2, 6, 8}), Context(true));
  ExpectWellFormed(d, 2, 6, 4);
  EXPECT_TRUE((d.selected.sum(-1) == 2).all().item<bool>());
  at::Tensor loss =
      (d.combine_weights * at::arange(4).to(at::kFloat)).sum() + d.aux_losses.at(0).second;
  loss.backward();
  for (const char* name : {"projection", "expert_embeddings", "temperature"}) {
    at::Tensor grad = Parameter(**router, name).grad();
    ASSERT_TRUE(grad.defined()) << name;
    EXPECT_TRUE(at::isfinite(grad).all().item<bool>()) << name;
    EXPECT_GT(grad.abs().sum().item<float>(), 0) << name;
  }
}

TEST(XMoeTest, ScaleOfTheInputDoesNotMatter) {
  torch::manual_seed(4);
  auto router = ResolveAndCreate(Spec(1, 16, 0.07f), RouterDims{8, 4, 2, true});
  ASSERT_TRUE(router.ok());
  at::Tensor hidden = at::randn({1, 5, 8});
  EXPECT_TRUE(at::allclose((*router)->Route(hidden, Context(false)).logits,
                           (*router)->Route(7 * hidden, Context(false)).logits, 1e-4, 1e-5));
}

TEST(XMoeTest, DefaultsDeclarationsAndErrors) {
  const RouterDims dims{8, 4, 2, true};
  const RouterRegistration* entry = *RouterRegistry().Find("xmoe");
  RouterSpec spec;
  spec.set_name("xmoe");
  spec.set_top_k(2);
  entry->resolve(&spec, dims);
  EXPECT_EQ(spec.xmoe().projection_dim(), 16);
  EXPECT_FLOAT_EQ(spec.xmoe().initial_temperature(), 0.07f);
  auto router = ResolveAndCreate(spec, dims);
  ASSERT_TRUE(router.ok());
  EXPECT_TRUE((*router)->IsCausal(true));
  EXPECT_TRUE((*router)->IsCausal(false));

  auto error = [&](RouterSpec bad) {
    auto r = ResolveAndCreate(bad, dims);
    EXPECT_FALSE(r.ok());
    return std::string(r.status().message());
  };
  EXPECT_THAT(error(Spec(2, 0)), HasSubstr("router.xmoe.projection_dim: must be >= 1"));
  EXPECT_THAT(error(Spec(2, 16, 0)), HasSubstr("router.xmoe.initial_temperature"));
  EXPECT_THAT(error(Spec(2, 16, -1)), HasSubstr("router.xmoe.initial_temperature"));
  EXPECT_THAT(error(Spec(2.5)), HasSubstr("router.top_k"));
  RouterSpec foreign = Spec(2);
  foreign.mutable_sinkhorn();
  EXPECT_THAT(error(foreign), HasSubstr("router.xmoe"));
}

}  // namespace
}  // namespace moelab
