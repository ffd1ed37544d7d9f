#include "models/grouped_ffn.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/generated/variable_factories.h>

#include <vector>

#include "gtest/gtest.h"
#include "models/feed_forward.h"

namespace moelab {
namespace {

double MaxAbsDiff(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

struct Weights {
  at::Tensor w1, b1, w2, b2;
};

Weights RandomWeights(int64_t e, int64_t d, int64_t h) {
  auto opts = at::TensorOptions().dtype(at::kDouble);
  return {torch::randn({e, d, h}, opts.requires_grad(true)),
          torch::randn({e, h}, opts.requires_grad(true)),
          torch::randn({e, h, d}, opts.requires_grad(true)),
          torch::randn({e, d}, opts.requires_grad(true))};
}

// Row by row, with the experts sliced out of the parameters: the plain
// formula, differentiated by autograd.
at::Tensor RowByRow(const at::Tensor& x, const std::vector<int64_t>& sizes, const Weights& w,
                    Activation activation) {
  std::vector<at::Tensor> rows;
  int64_t row = 0;
  for (size_t e = 0; e < sizes.size(); ++e) {
    for (int64_t i = 0; i < sizes[e]; ++i, ++row) {
      at::Tensor h = ApplyActivation(at::matmul(x[row], w.w1[e]) + w.b1[e], activation);
      rows.push_back(at::matmul(h, w.w2[e]) + w.b2[e]);
    }
  }
  return at::stack(rows);
}

class GroupedExpertFfnTest : public ::testing::TestWithParam<Activation> {};

TEST_P(GroupedExpertFfnTest, MatchesRowByRowValuesAndGradients) {
  torch::manual_seed(1);
  const std::vector<int64_t> sizes = {3, 0, 5, 1};  // expert 1 gets no rows
  const Weights w = RandomWeights(4, 6, 7);
  at::Tensor x = torch::randn({9, 6}, at::TensorOptions().dtype(at::kDouble).requires_grad(true));
  const at::Tensor probe = torch::randn({9, 6}, at::kDouble);

  at::Tensor y = GroupedExpertFfn(x, sizes, w.w1, w.b1, w.w2, w.b2, GetParam());
  at::Tensor y_ref = RowByRow(x, sizes, w, GetParam());
  EXPECT_LT(MaxAbsDiff(y, y_ref), 1e-12);

  const std::vector<at::Tensor> inputs = {x, w.w1, w.b1, w.w2, w.b2};
  auto grads = torch::autograd::grad({(y * probe).sum()}, inputs);
  auto grads_ref = torch::autograd::grad({(y_ref * probe).sum()}, inputs);
  for (size_t i = 0; i < inputs.size(); ++i) {
    EXPECT_LT(MaxAbsDiff(grads[i], grads_ref[i]), 1e-12) << "input " << i;
  }
  // The expert without rows gets exactly zero gradient.
  EXPECT_EQ(grads[1][1].abs().max().item<double>(), 0.0);
  EXPECT_EQ(grads[4][1].abs().max().item<double>(), 0.0);
}

TEST_P(GroupedExpertFfnTest, GradientsMatchFiniteDifferences) {
  torch::manual_seed(2);
  const std::vector<int64_t> sizes = {2, 3, 0};
  const Weights w = RandomWeights(3, 4, 5);
  at::Tensor x = torch::randn({5, 4}, at::TensorOptions().dtype(at::kDouble).requires_grad(true));
  const at::Tensor probe = torch::randn({5, 4}, at::kDouble);
  const std::vector<at::Tensor> inputs = {x, w.w1, w.b1, w.w2, w.b2};
  auto objective = [&] {
    return (GroupedExpertFfn(x, sizes, w.w1, w.b1, w.w2, w.b2, GetParam()) * probe).sum();
  };
  auto grads = torch::autograd::grad({objective()}, inputs);
  const double eps = 1e-6;
  for (size_t i = 0; i < inputs.size(); ++i) {
    at::Tensor flat = inputs[i].detach().view({-1});
    at::Tensor grad_flat = grads[i].view({-1});
    for (int64_t j = 0; j < flat.numel(); ++j) {
      const double saved = flat[j].item<double>();
      flat[j] = saved + eps;
      const double plus = objective().item<double>();
      flat[j] = saved - eps;
      const double minus = objective().item<double>();
      flat[j] = saved;
      EXPECT_NEAR(grad_flat[j].item<double>(), (plus - minus) / (2 * eps), 1e-6)
          << "input " << i << " entry " << j;
    }
  }
}

TEST_P(GroupedExpertFfnTest, NoRowsGivesEmptyOutputAndZeroGradients) {
  const Weights w = RandomWeights(2, 3, 4);
  at::Tensor x = torch::zeros({0, 3}, at::TensorOptions().dtype(at::kDouble).requires_grad(true));
  at::Tensor y = GroupedExpertFfn(x, {0, 0}, w.w1, w.b1, w.w2, w.b2, GetParam());
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{0, 3}));
  auto grads = torch::autograd::grad({y.sum()}, {w.w1, w.b2});
  EXPECT_EQ(grads[0].abs().sum().item<double>(), 0.0);
  EXPECT_EQ(grads[1].abs().sum().item<double>(), 0.0);
}

INSTANTIATE_TEST_SUITE_P(Activations, GroupedExpertFfnTest, ::testing::Values(GELU, RELU));

}  // namespace
}  // namespace moelab
