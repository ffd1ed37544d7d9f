#include "models/block_stack.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "models/model_spec_util.h"

namespace moelab {
namespace {

constexpr int64_t kDim = 8;

struct Owner : torch::nn::Module {};

MoeSpec FourExpertsEveryOtherBlock() {
  MoeSpec moe;
  moe.set_num_experts(4);
  moe.set_expert_hidden(16);
  moe.set_moe_every(2);
  return moe;
}

RouterSpec TokenChoice() {
  RouterSpec router;
  router.set_name("token_choice");
  router.set_top_k(2);
  router.set_load_balance_coef(0.01);
  return router;
}

std::vector<TransformerBlock> MustBuild(Owner& owner, int64_t layers) {
  torch::manual_seed(1);
  absl::StatusOr<std::vector<TransformerBlock>> blocks = BuildBlockStack(
      owner, layers, FourExpertsEveryOtherBlock(),
      TransformerBlockOptions(kDim, 2).dense_hidden(16), TokenChoice(),
      RouterDims{.model_dim = kDim, .num_experts = 4, .num_heads = 2}, RouterStreamKey());
  EXPECT_TRUE(blocks.ok()) << blocks.status();
  return blocks.ok() ? *std::move(blocks) : std::vector<TransformerBlock>{};
}

TEST(BlockStackTest, EveryOtherBlockIsMoeAndEachIsRegisteredByDepth) {
  Owner owner;
  const std::vector<TransformerBlock> blocks = MustBuild(owner, 4);
  ASSERT_EQ(blocks.size(), 4u);
  EXPECT_FALSE(blocks[0]->is_moe());
  EXPECT_TRUE(blocks[1]->is_moe());
  EXPECT_FALSE(blocks[2]->is_moe());
  EXPECT_TRUE(blocks[3]->is_moe());
  std::vector<std::string> names;
  for (const auto& child : owner.named_children()) names.push_back(child.key());
  EXPECT_EQ(names, (std::vector<std::string>{"block0", "block1", "block2", "block3"}));
  EXPECT_EQ(RoutersOf(blocks).size(), 2u);
  EXPECT_EQ(RoutersOf(blocks)[0].get(), blocks[1]->moe->router().get());
}

TEST(BlockStackTest, RunKeepsEachMoeBlocksDecisionAndSumsTheirAuxLosses) {
  Owner owner;
  std::vector<TransformerBlock> blocks = MustBuild(owner, 4);
  const at::Tensor x = torch::randn({2, 5, kDim});  // [B, T, D]
  RoutingContext context;
  context.token_ids = at::arange(5).unsqueeze(0).expand({2, 5});
  ModelOutput kept;
  kept.aux_loss = at::zeros({});
  const at::Tensor y = RunBlockStack(blocks, x, context, /*keep_routing=*/true, &kept);
  EXPECT_EQ(y.sizes(), x.sizes());
  ASSERT_EQ(kept.routing.size(), 2u);
  EXPECT_EQ(kept.routing[0].selected.sizes(), (std::vector<int64_t>{2, 5, 4}));
  double sum = 0;
  for (const RoutingDecision& d : kept.routing) {
    ASSERT_FALSE(d.aux_losses.empty()) << "load balancing is on in both MoE blocks";
    for (const auto& [name, loss] : d.aux_losses) sum += loss.item<double>();
  }
  EXPECT_GT(sum, 0);
  EXPECT_NEAR(kept.aux_loss.item<double>(), sum, 1e-6);

  ModelOutput dropped;
  dropped.aux_loss = at::zeros({});
  const at::Tensor y_again = RunBlockStack(blocks, x, context, /*keep_routing=*/false, &dropped);
  EXPECT_TRUE(dropped.routing.empty());
  EXPECT_TRUE(at::allclose(y, y_again));
  EXPECT_DOUBLE_EQ(dropped.aux_loss.item<double>(), kept.aux_loss.item<double>());
}

}  // namespace
}  // namespace moelab
