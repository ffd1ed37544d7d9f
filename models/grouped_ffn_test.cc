#include "models/grouped_ffn.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/generated/variable_factories.h>

#include <vector>

#include "core/precision.h"
#include "gtest/gtest.h"
#include "models/feed_forward.h"
#include "models/matmul.h"

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

// Under BF16 with its operands held in fp32 (models/matmul.h), the backward
// rounds the pre-activation gradient in place for the products; the bias
// gradient must come from its fp32 values, and the rounding of the
// activations must not reach the saved pre-activations. Neither the bias
// gradient nor the pre-activation gradient depends on a rounding that FP32
// skips when the inputs already hold bf16 values, so BF16 must give them to
// the bit as FP32 does on those inputs.
TEST_P(GroupedExpertFfnTest, Bf16BiasGradientsAreTheFp32OnesOfRoundedInputs) {
  const Bf16Operands saved_storage = CurrentBf16Operands();
  SetBf16Operands(Bf16Operands::kRoundedFp32);
  torch::manual_seed(11);
  const std::vector<int64_t> sizes = {40, 0, 25, 63};
  const auto bf16_values = [](const at::Tensor& t) { return t.to(at::kBFloat16).to(at::kFloat); };
  const at::Tensor x = bf16_values(torch::randn({128, 16}));
  const at::Tensor w1 = bf16_values(torch::randn({4, 16, 48}) * 0.3);
  const at::Tensor w2 = bf16_values(torch::randn({4, 48, 16}) * 0.3);
  const at::Tensor b1 = torch::randn({4, 48}), b2 = torch::randn({4, 16});
  const at::Tensor grad_y = bf16_values(torch::randn({128, 16}));
  std::vector<at::Tensor> grads[2];
  for (int run = 0; run < 2; ++run) {
    PrecisionScope precision(run == 0 ? FP32 : BF16);
    std::vector<at::Tensor> leaves = {x.clone().requires_grad_(), w1.clone().requires_grad_(),
                                      b1.clone().requires_grad_(), w2.clone().requires_grad_(),
                                      b2.clone().requires_grad_()};
    GroupedExpertFfn(leaves[0], sizes, leaves[1], leaves[2], leaves[3], leaves[4], GetParam())
        .backward(grad_y);
    for (const at::Tensor& leaf : leaves) grads[run].push_back(leaf.grad());
  }
  SetBf16Operands(saved_storage);
  const at::Tensor &fp32_b1 = grads[0][2], &bf16_b1 = grads[1][2];
  EXPECT_TRUE(bf16_b1.equal(fp32_b1)) << MaxAbsDiff(bf16_b1, fp32_b1);
  EXPECT_TRUE(grads[1][4].equal(grads[0][4]));  // b2: the fp32 output gradient
  // The products did take rounded operands: the weight gradients of w1 are
  // bf16-close to FP32's, not equal.
  EXPECT_FALSE(grads[1][1].equal(grads[0][1]));
  EXPECT_LT(MaxAbsDiff(grads[1][1], grads[0][1]), 2e-2 * grads[0][1].abs().max().item<double>());
  // The expert without rows gets exact zeros.
  for (int i = 1; i <= 4; ++i) {
    EXPECT_EQ(grads[1][i][1].abs().max().item<float>(), 0.0f) << "parameter " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Activations, GroupedExpertFfnTest, ::testing::Values(GELU, RELU));

}  // namespace
}  // namespace moelab
