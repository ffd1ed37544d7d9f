// Expert parallelism against one process: an MoE layer whose 4 experts are
// split over 2 worker processes (2 each, tokens exchanged by c10d's
// all-to-all on loopback) gives, on each rank's tokens, the outputs and
// gradients of the layer in one process on the same tokens, for routers of
// every kind: per-token (token choice, with and without capacity), per
// expert over the batch (expert choice) and per sequence at fractional k
// (unified). Each rank routes its own tokens, so the reference is the layer
// run on each rank's half in turn, its parameter gradients summed. The test
// starts its own workers (this binary again, through the local launcher).

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/serialize.h>
#include <torch/torch.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/distributed/c10d_expert_exchange.h"
#include "core/distributed/local_launcher.h"
#include "core/distributed/process_groups.h"
#include "core/distributed/worker_place.h"
#include "core/router.h"
#include "google/protobuf/text_format.h"
#include "models/moe_layer.h"
#include "models/testing/test_routers.h"

namespace moelab {
namespace {

constexpr int64_t kDim = 8, kExperts = 4, kHidden = 16, kTopK = 2;
constexpr int64_t kBatch = 4, kTokens = 6;  // 2 sequences per rank
constexpr char kOutputVariable[] = "MOELAB_EXPERT_PARALLEL_TEST_OUTPUT";
constexpr char kRouterVariable[] = "MOELAB_EXPERT_PARALLEL_TEST_ROUTER";

// The routers tested: a registered router's spec, or empty for TestRouter.
const std::vector<std::string>& RouterSpecs() {
  static const auto* const kSpecs = new std::vector<std::string>{
      "",
      R"pb(name: "token_choice"
           top_k: 2
           token_choice { capacity_factor: 0.75 })pb",
      R"pb(name: "expert_choice"
           top_k: 2
           expert_choice {})pb",
      R"pb(name: "unified"
           top_k: 1.5
           unified { scope: PER_SEQUENCE })pb",
  };
  return *kSpecs;
}

struct Layer {
  std::shared_ptr<Router> router;
  MoeLayer moe{nullptr};
};

Layer MakeLayer(const std::string& router_spec) {
  torch::manual_seed(7);
  Layer layer;
  if (router_spec.empty()) {
    layer.router = std::make_shared<TestRouter>(kDim, kExperts, kTopK);
  } else {
    RouterSpec spec;
    EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(router_spec, &spec));
    const RouterDims dims{.model_dim = kDim, .num_experts = kExperts, .num_heads = 2};
    absl::StatusOr<const RouterRegistration*> entry = RouterRegistry().Find(spec.name());
    EXPECT_TRUE(entry.ok()) << entry.status();
    if ((*entry)->resolve) (*entry)->resolve(&spec, dims);
    absl::StatusOr<std::shared_ptr<Router>> router = CreateRouter(spec, dims);
    EXPECT_TRUE(router.ok()) << router.status();
    layer.router = *router;
  }
  layer.moe = MoeLayer(MoeLayerOptions(kDim, kExperts, kHidden), layer.router);
  return layer;
}

// The tokens and the gradient arriving from above, the same in every process.
at::Tensor Tokens() {
  return at::randn({kBatch, kTokens, kDim}, at::detail::createCPUGenerator(11));
}
at::Tensor Upstream() {
  return at::randn({kBatch, kTokens, kDim}, at::detail::createCPUGenerator(12));
}

// Forward and backward on rows [first, first + count) of the batch:
// {output, input gradient, w1, b1, w2, b2 gradients, the router's gradients
// flattened}, the parameter gradients as accumulated so far.
std::vector<at::Tensor> ForwardBackward(Layer& layer, int64_t first, int64_t count) {
  at::Tensor hidden = Tokens().slice(0, first, first + count).clone().set_requires_grad(true);
  MoeLayerOutput out = layer.moe->forward(hidden, RoutingContext());
  (out.output * Upstream().slice(0, first, first + count)).sum().backward();
  std::vector<at::Tensor> router_grads;
  for (const at::Tensor& p : layer.router->parameters()) {
    router_grads.push_back(p.grad().defined() ? p.grad().flatten() : at::zeros({p.numel()}));
  }
  return {out.output.detach(),          hidden.grad(),
          layer.moe->w1.grad().clone(), layer.moe->b1.grad().clone(),
          layer.moe->w2.grad().clone(), layer.moe->b2.grad().clone(),
          at::cat(router_grads)};
}

void RunWorker() {
  absl::StatusOr<WorkerPlace> place = WorkerPlaceFromEnvironment();
  ASSERT_TRUE(place.ok()) << place.status();
  absl::StatusOr<std::unique_ptr<ProcessGroups>> groups =
      ProcessGroups::Join(*place, {.expert_parallel = 2, .timeout = std::chrono::seconds(60)});
  ASSERT_TRUE(groups.ok()) << groups.status();
  Layer layer = MakeLayer(RouterSpecs().at(std::atoi(std::getenv(kRouterVariable))));
  absl::StatusOr<std::vector<at::Tensor>> kept =
      layer.moe->ShardExperts(std::make_shared<C10dExpertExchange>(**groups));
  ASSERT_TRUE(kept.ok()) << kept.status();
  ASSERT_EQ(kept->size(), 4u);
  EXPECT_EQ(layer.moe->LocalExperts(), 2);
  const int rank = (*groups)->rank();
  // Every parameter the optimizer would see: the kept shards, not the
  // whole layer's experts.
  EXPECT_EQ(layer.moe->w1.sizes(), (std::vector<int64_t>{2, kDim, kHidden}));
  EXPECT_EQ(layer.moe->named_parameters()["w1"].sizes(), layer.moe->w1.sizes());
  torch::save(ForwardBackward(layer, rank * kBatch / 2, kBatch / 2),
              absl::StrCat(std::getenv(kOutputVariable), ".rank", rank));
}

TEST(ExpertParallelTest, TwoRanksGiveTheSingleProcessOutputsAndGradients) {
  if (std::getenv("WORLD_SIZE") != nullptr) {
    RunWorker();
    return;
  }
  const char* tmp = std::getenv("TEST_TMPDIR");
  for (size_t router = 0; router < RouterSpecs().size(); ++router) {
    const std::string& router_spec = RouterSpecs()[router];
    SCOPED_TRACE(router_spec.empty() ? "TestRouter" : router_spec);
    const std::string output = absl::StrCat(tmp ? tmp : "/tmp", "/expert_parallel_router", router);
    LaunchOptions launch{
        .nproc = 2,
        .argv = {"/proc/self/exe",
                 "--gtest_filter=ExpertParallelTest."
                 "TwoRanksGiveTheSingleProcessOutputsAndGradients"},
        .grace = std::chrono::seconds(10),
        .environment = {absl::StrCat(kOutputVariable, "=", output),
                        absl::StrCat(kRouterVariable, "=", router), "OMP_NUM_THREADS=1"},
        .unset_environment = TestRunnerVariables()};
    absl::StatusOr<int> code = LaunchLocalWorkers(launch);
    ASSERT_TRUE(code.ok()) << code.status();
    ASSERT_EQ(*code, 0) << "a worker failed";

    // One process, each rank's half in turn: the second call's parameter
    // gradients hold both halves'.
    Layer single = MakeLayer(router_spec);
    std::vector<std::vector<at::Tensor>> halves;
    for (int rank = 0; rank < 2; ++rank) {
      halves.push_back(ForwardBackward(single, rank * kBatch / 2, kBatch / 2));
    }
    const std::vector<at::Tensor>& summed = halves[1];
    at::Tensor router_sum;
    for (int rank = 0; rank < 2; ++rank) {
      std::vector<at::Tensor> got;
      torch::load(got, absl::StrCat(output, ".rank", rank));
      ASSERT_EQ(got.size(), 7u);
      EXPECT_TRUE(at::allclose(got[0], halves[rank][0], 1e-5, 1e-6))
          << "rank " << rank << " outputs";
      EXPECT_TRUE(at::allclose(got[1], halves[rank][1], 1e-5, 1e-6))
          << "rank " << rank << " input gradients";
      // The rank's experts collect the gradient of every rank's tokens.
      for (int p = 2; p < 6; ++p) {
        const at::Tensor expected = summed[p].slice(0, rank * 2, rank * 2 + 2);
        EXPECT_TRUE(at::allclose(got[p], expected, 1e-5, 1e-6))
            << "rank " << rank << " expert gradient " << p << ": max difference "
            << (got[p] - expected).abs().max().item<double>();
      }
      router_sum = rank == 0 ? got[6] : router_sum + got[6];
    }
    // The router is replicated: each rank's gradient covers its tokens.
    EXPECT_TRUE(at::allclose(router_sum, summed[6], 1e-5, 1e-6));
    EXPECT_GT(summed[6].abs().sum().item<double>(), 0) << "the router got no gradient";
    // Not trivially equal: every expert has a gradient (received tokens).
    for (int64_t e = 0; e < kExperts; ++e) {
      EXPECT_GT(summed[2][e].abs().sum().item<double>(), 0) << "expert " << e;
    }
  }
}

}  // namespace
}  // namespace moelab
