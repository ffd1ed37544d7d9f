#include "models/attention.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/generated/variable_factories.h>
#include <torch/utils.h>

#include <cmath>
#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "models/moe_layer.h"
#include "models/testing/test_routers.h"
#include "models/transformer_block.h"

namespace moelab {
namespace {

double MaxAbsDiff(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

// Attention written out per head and per pair of positions from the
// projection weights.
at::Tensor ReferenceProbs(SelfAttentionImpl& attn, const at::Tensor& x) {
  const int64_t b = x.size(0), t = x.size(1), d = x.size(2);
  const int64_t heads = attn.options.num_heads(), dh = d / heads;
  const at::Tensor q = attn.query->forward(x), k = attn.key->forward(x);
  at::Tensor probs = torch::zeros({b, heads, t, t}, x.options());
  for (int64_t n = 0; n < b; ++n) {
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < t; ++i) {
        const int64_t visible = attn.options.causal() ? i + 1 : t;
        at::Tensor scores = torch::zeros({visible}, x.options());
        for (int64_t j = 0; j < visible; ++j) {
          scores[j] =
              (q[n][i].slice(0, h * dh, (h + 1) * dh) * k[n][j].slice(0, h * dh, (h + 1) * dh))
                  .sum() /
              std::sqrt(double(dh));
        }
        probs[n][h][i].slice(0, 0, visible).copy_(at::softmax(scores, 0));
      }
    }
  }
  return probs;
}

// sum_h sum_j A_h[i, j] V_h[j] + out.bias.
at::Tensor Reconstruct(const at::Tensor& probs, const at::Tensor& values, const at::Tensor& bias) {
  return at::matmul(probs, values).sum(1) + bias;
}

class SelfAttentionTest : public ::testing::TestWithParam<bool> {};

TEST_P(SelfAttentionTest, ProbsMatchReferenceAndValuesReconstructOutput) {
  torch::manual_seed(0);
  const bool causal = GetParam();
  SelfAttention attn(SelfAttentionOptions(12, 3).causal(causal));
  attn->to(at::kDouble);
  const at::Tensor x = torch::randn({2, 5, 12}, at::kDouble);
  SelfAttentionOutput out = attn->forward(x, /*expose_for_routing=*/true);
  EXPECT_EQ(out.output.sizes(), (std::vector<int64_t>{2, 5, 12}));
  EXPECT_EQ(out.probs.sizes(), (std::vector<int64_t>{2, 3, 5, 5}));
  EXPECT_EQ(out.values.sizes(), (std::vector<int64_t>{2, 3, 5, 12}));
  EXPECT_LT(MaxAbsDiff(out.probs, ReferenceProbs(*attn, x)), 1e-12);
  EXPECT_LT(MaxAbsDiff(out.probs.sum(-1), torch::ones({2, 3, 5}, at::kDouble)), 1e-12);
  EXPECT_LT(MaxAbsDiff(Reconstruct(out.probs, out.values, attn->out->bias), out.output), 1e-12);
  const at::Tensor above_diagonal = out.probs.masked_select(torch::ones({5, 5}, at::kBool).triu(1));
  if (causal) {
    EXPECT_EQ(above_diagonal.abs().max().item<double>(), 0.0);
  } else {
    EXPECT_GT(above_diagonal.min().item<double>(), 0.0);
  }
}

TEST_P(SelfAttentionTest, FutureTokensAffectEarlierOutputsOnlyWhenBidirectional) {
  torch::manual_seed(1);
  const bool causal = GetParam();
  SelfAttention attn(SelfAttentionOptions(8, 2).causal(causal));
  at::Tensor x = torch::randn({1, 6, 8});
  const at::Tensor before = attn->forward(x).output;
  x[0][4] = torch::randn({8});
  const at::Tensor after = attn->forward(x).output;
  const double earlier_change = MaxAbsDiff(before.slice(1, 0, 4), after.slice(1, 0, 4));
  if (causal) {
    EXPECT_EQ(earlier_change, 0.0);
  } else {
    EXPECT_GT(earlier_change, 1e-4);
  }
  EXPECT_GT(MaxAbsDiff(before[0][4], after[0][4]), 1e-4);
}

TEST_P(SelfAttentionTest, RoutingInputsOnlyWhenAsked) {
  SelfAttention attn(SelfAttentionOptions(8, 2).causal(GetParam()));
  SelfAttentionOutput out = attn->forward(torch::randn({1, 3, 8}));
  EXPECT_FALSE(out.probs.defined());
  EXPECT_FALSE(out.values.defined());
}

INSTANTIATE_TEST_SUITE_P(CausalAndBidirectional, SelfAttentionTest, ::testing::Bool());

// In a block whose router NeedsAttention(), the router receives exactly the
// attention the block used: rebuilding the attention output from the handed
// probabilities and values, adding the residual and applying LN2 gives the
// hidden states the router was handed.
TEST(TransformerBlockTest, RouterGetsTheAttentionTheBlockUsed) {
  torch::manual_seed(2);
  for (bool needs_attention : {true, false}) {
    auto router = std::make_shared<TestRouter>(8, 4, 2, needs_attention);
    TransformerBlock block(TransformerBlockOptions(8, 2).causal(true),
                           MoeLayer(MoeLayerOptions(8, 4, 16), router));
    block->to(at::kDouble);
    const at::Tensor x = torch::randn({2, 5, 8}, at::kDouble);
    RoutingContext context;
    context.causal = true;
    TransformerBlockOutput out = block->forward(x, context);
    EXPECT_EQ(out.hidden.sizes(), x.sizes());
    EXPECT_TRUE(out.decision.selected.defined());
    const RoutingContext& seen = router->last_context();
    if (!needs_attention) {
      EXPECT_FALSE(seen.attention_probs.defined());
      EXPECT_FALSE(seen.attention_values.defined());
      continue;
    }
    ASSERT_TRUE(seen.attention_probs.defined());
    EXPECT_EQ(seen.attention_probs.sizes(), (std::vector<int64_t>{2, 2, 5, 5}));
    EXPECT_EQ(seen.attention_values.sizes(), (std::vector<int64_t>{2, 2, 5, 8}));
    const at::Tensor attention_output =
        Reconstruct(seen.attention_probs, seen.attention_values, block->attention->out->bias);
    const at::Tensor u = block->ln2->forward(x + attention_output);
    EXPECT_LT(MaxAbsDiff(u, router->last_hidden()), 1e-12);
    EXPECT_LT(
        MaxAbsDiff(seen.attention_probs, ReferenceProbs(*block->attention, block->ln1->forward(x))),
        1e-12);
  }
}

TEST(TransformerBlockTest, DenseBlockShapes) {
  TransformerBlock block(TransformerBlockOptions(8, 2).dense_hidden(12));
  EXPECT_FALSE(block->is_moe());
  TransformerBlockOutput out = block->forward(torch::randn({3, 4, 8}), RoutingContext());
  EXPECT_EQ(out.hidden.sizes(), (std::vector<int64_t>{3, 4, 8}));
  EXPECT_FALSE(out.decision.selected.defined());
}

}  // namespace
}  // namespace moelab
