#include "models/moe_layer.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/generated/variable_factories.h>
#include <torch/utils.h>

#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "models/feed_forward.h"
#include "models/testing/reference_moe.h"
#include "models/testing/test_routers.h"

namespace moelab {
namespace {

double MaxAbsDiff(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

struct Fixture {
  std::shared_ptr<TestRouter> router;
  MoeLayer layer{nullptr};
};

Fixture MakeLayer(int64_t d, int64_t e, int64_t h, int64_t k, Activation activation = GELU,
                  bool shared = false) {
  Fixture f;
  f.router = std::make_shared<TestRouter>(d, e, k);
  f.layer =
      MoeLayer(MoeLayerOptions(d, e, h).activation(activation).shared_expert(shared), f.router);
  return f;
}

TEST(MoeLayerTest, OutputShapesAndDecision) {
  torch::manual_seed(0);
  Fixture f = MakeLayer(/*d=*/8, /*e=*/4, /*h=*/16, /*k=*/2);
  const at::Tensor hidden = torch::randn({3, 5, 8});
  MoeLayerOutput out = f.layer->forward(hidden, RoutingContext());
  EXPECT_EQ(out.output.sizes(), hidden.sizes());
  EXPECT_EQ(out.decision.selected.sizes(), (std::vector<int64_t>{3, 5, 4}));
  EXPECT_TRUE((out.decision.selected.sum(-1) == 2).all().item<bool>());
  EXPECT_EQ(f.layer->w1.sizes(), (std::vector<int64_t>{4, 8, 16}));
  EXPECT_EQ(f.layer->b1.sizes(), (std::vector<int64_t>{4, 16}));
  EXPECT_EQ(f.layer->w2.sizes(), (std::vector<int64_t>{4, 16, 8}));
  EXPECT_EQ(f.layer->b2.sizes(), (std::vector<int64_t>{4, 8}));
  // The router is a submodule: its gate is among the layer's parameters.
  EXPECT_EQ(f.layer->named_parameters().size(), 5u);
  EXPECT_TRUE(f.layer->named_parameters().contains("router.gate_weight"));
}

// Values and gradients with respect to the input, every expert parameter
// and the router's gate, against the per-token definition, in double.
void ExpectMatchesNaive(Fixture& f, const at::Tensor& hidden_in) {
  f.layer->to(at::kDouble);
  at::Tensor hidden = hidden_in.to(at::kDouble).detach().requires_grad_(true);
  MoeLayerOutput out = f.layer->forward(hidden, RoutingContext());
  const at::Tensor reference = ReferenceMoe(*f.layer, hidden, out.decision);
  EXPECT_LT(MaxAbsDiff(out.output, reference), 1e-10);

  const at::Tensor probe = torch::randn(hidden.sizes(), at::kDouble);
  std::vector<at::Tensor> inputs = {hidden,      f.layer->w1, f.layer->b1,
                                    f.layer->w2, f.layer->b2, f.router->gate_weight};
  if (f.layer->shared) {
    for (const at::Tensor& p : f.layer->shared->parameters()) inputs.push_back(p);
  }
  auto grads = torch::autograd::grad({(out.output * probe).sum()}, inputs,
                                     /*grad_outputs=*/{}, /*retain_graph=*/true);
  auto grads_ref = torch::autograd::grad({(reference * probe).sum()}, inputs);
  for (size_t i = 0; i < inputs.size(); ++i) {
    EXPECT_LT(MaxAbsDiff(grads[i], grads_ref[i]), 1e-10) << "input " << i;
    EXPECT_GT(grads[i].abs().max().item<double>(), 0.0) << "input " << i;
  }
}

TEST(MoeLayerTest, MatchesNaivePerTokenImplementationTopK) {
  torch::manual_seed(1);
  Fixture f = MakeLayer(6, 4, 5, 2);
  ExpectMatchesNaive(f, torch::randn({2, 7, 6}));
}

TEST(MoeLayerTest, MatchesNaivePerTokenImplementationReluSharedExpert) {
  torch::manual_seed(2);
  Fixture f = MakeLayer(6, 3, 5, 1, RELU, /*shared=*/true);
  ExpectMatchesNaive(f, torch::randn({2, 4, 6}));
}

TEST(MoeLayerTest, VariableExpertsPerTokenIncludingNone) {
  torch::manual_seed(3);
  Fixture f = MakeLayer(6, 4, 5, 2);
  // Per token: no expert, one, all four, two, none, three.
  at::Tensor mask = torch::tensor({0, 0, 0, 0,  //
                                   0, 1, 0, 0,  //
                                   1, 1, 1, 1,  //
                                   1, 0, 0, 1,  //
                                   0, 0, 0, 0,  //
                                   0, 1, 1, 1})
                        .to(at::kBool)
                        .view({1, 6, 4});
  f.router->set_fixed_selection(mask);
  ExpectMatchesNaive(f, torch::randn({1, 6, 6}));

  MoeLayerOutput out = f.layer->forward(torch::randn({1, 6, 6}, at::kDouble), RoutingContext());
  // A token without experts gets exactly zero from the layer.
  EXPECT_EQ(out.output[0][0].abs().max().item<double>(), 0.0);
  EXPECT_EQ(out.output[0][4].abs().max().item<double>(), 0.0);
  EXPECT_GT(out.output[0][2].abs().max().item<double>(), 0.0);
}

TEST(MoeLayerTest, UnselectedExpertGetsExactlyZeroGradient) {
  torch::manual_seed(4);
  Fixture f = MakeLayer(4, 3, 5, 1);
  at::Tensor mask = torch::zeros({2, 3, 3}, at::kBool);
  mask.select(2, 0).fill_(true);
  mask[1][2][2] = true;  // expert 1 is never used
  f.router->set_fixed_selection(mask);
  MoeLayerOutput out = f.layer->forward(torch::randn({2, 3, 4}), RoutingContext());
  out.output.sum().backward();
  EXPECT_EQ(f.layer->w1.grad()[1].abs().max().item<float>(), 0.0f);
  EXPECT_EQ(f.layer->b2.grad()[1].abs().max().item<float>(), 0.0f);
  EXPECT_GT(f.layer->w1.grad()[2].abs().max().item<float>(), 0.0f);
}

TEST(MoeLayerTest, OneExpertTopOneEqualsDenseFfn) {
  torch::manual_seed(5);
  Fixture f = MakeLayer(8, 1, 12, 1);
  FeedForward dense(FeedForwardOptions(8, 12).activation(GELU));
  {
    torch::NoGradGuard no_grad;
    dense->up->weight.copy_(f.layer->w1[0].t());
    dense->up->bias.copy_(f.layer->b1[0]);
    dense->down->weight.copy_(f.layer->w2[0].t());
    dense->down->bias.copy_(f.layer->b2[0]);
  }
  const at::Tensor hidden = torch::randn({2, 5, 8});
  MoeLayerOutput out = f.layer->forward(hidden, RoutingContext());
  // softmax over one expert is 1: the layer is the FFN itself.
  EXPECT_LT(MaxAbsDiff(out.output, dense->forward(hidden)), 1e-5);
}

TEST(MoeLayerTest, SharedExpertAloneWhenNothingIsSelected) {
  torch::manual_seed(6);
  Fixture f = MakeLayer(4, 3, 6, 1, GELU, /*shared=*/true);
  f.router->set_fixed_selection(torch::zeros({2, 3, 3}, at::kBool));
  const at::Tensor hidden = torch::randn({2, 3, 4});
  MoeLayerOutput out = f.layer->forward(hidden, RoutingContext());
  EXPECT_LT(MaxAbsDiff(out.output, f.layer->shared->forward(hidden)), 1e-6);
}

TEST(MoeLayerTest, FloatMatchesNaiveWithinTolerance) {
  torch::manual_seed(7);
  Fixture f = MakeLayer(16, 8, 32, 2);
  at::Tensor hidden = torch::randn({4, 9, 16}).requires_grad_(true);
  MoeLayerOutput out = f.layer->forward(hidden, RoutingContext());
  const at::Tensor reference = ReferenceMoe(*f.layer, hidden, out.decision);
  EXPECT_LT(MaxAbsDiff(out.output, reference), 1e-5);
  auto g = torch::autograd::grad({out.output.sum()}, {hidden, f.layer->w2}, {}, true);
  auto g_ref = torch::autograd::grad({reference.sum()}, {hidden, f.layer->w2});
  EXPECT_LT(MaxAbsDiff(g[0], g_ref[0]), 1e-4);
  EXPECT_LT(MaxAbsDiff(g[1], g_ref[1]), 1e-4);
}

TEST(MoeLayerTest, ParametersPerExpert) {
  Fixture f = MakeLayer(8, 4, 16, 2);
  EXPECT_EQ(f.layer->ParametersPerExpert(), 2 * 8 * 16 + 16 + 8);
}

}  // namespace
}  // namespace moelab
