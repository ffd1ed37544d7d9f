#include "routers/random.h"

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>

#include "routers/testing/router_test_util.h"

namespace moelab {
namespace {

using ::moelab::testing::Context;
using ::moelab::testing::ExpectWellFormed;
using ::moelab::testing::ResolveAndCreate;
using ::testing::HasSubstr;

RouterSpec Spec(double k, bool fixed_per_token = false) {
  RouterSpec spec;
  spec.set_name("random");
  spec.set_top_k(k);
  spec.mutable_random()->set_fixed_per_token(fixed_per_token);
  return spec;
}

RoutingContext WithIds(const at::Tensor& ids) {
  RoutingContext context;
  context.token_ids = ids;
  return context;
}

TEST(RandomTest, KDistinctExpertsWithWeightOneOverK) {
  torch::manual_seed(0);
  for (int k : {1, 2, 3}) {
    auto router = ResolveAndCreate(Spec(k), RouterDims{4, 6, 2, true});
    ASSERT_TRUE(router.ok()) << router.status();
    RoutingDecision d = (*router)->Route(at::randn({2, 9, 4}), Context(true));
    ExpectWellFormed(d, 2, 9, 6);
    EXPECT_TRUE((d.selected.sum(-1) == k).all().item<bool>());
    EXPECT_TRUE(
        at::allclose(d.combine_weights, d.selected.to(at::kFloat) / static_cast<double>(k)));
    EXPECT_TRUE(at::allclose(d.combine_weights.sum(-1), at::ones({2, 9})));
  }
}

TEST(RandomTest, ReproducibleUnderManualSeedAndFreshEachCall) {
  auto router = ResolveAndCreate(Spec(2), RouterDims{4, 8, 2, true});
  ASSERT_TRUE(router.ok());
  at::Tensor hidden = at::randn({3, 16, 4});
  torch::manual_seed(123);
  at::Tensor first = (*router)->Route(hidden, Context(true)).selected;
  at::Tensor second = (*router)->Route(hidden, Context(true)).selected;
  torch::manual_seed(123);
  at::Tensor replay = (*router)->Route(hidden, Context(true)).selected;
  EXPECT_TRUE(at::equal(first, replay));
  EXPECT_FALSE(at::equal(first, second));
}

TEST(RandomTest, UniformOverExperts) {
  torch::manual_seed(5);
  auto router = ResolveAndCreate(Spec(2), RouterDims{4, 8, 2, true});
  ASSERT_TRUE(router.ok());
  // 16000 pairs over 8 experts: 2000 each, standard deviation about 42.
  at::Tensor load = (*router)
                        ->Route(at::zeros({8, 1000, 4}), Context(true))
                        .selected.sum(at::IntArrayRef{0, 1})
                        .to(at::kFloat);
  EXPECT_TRUE(((load - 2000).abs() < 200).all().item<bool>()) << load;
}

TEST(RandomTest, FixedPerTokenIsAFunctionOfTheId) {
  torch::manual_seed(1);
  auto router = ResolveAndCreate(Spec(2, true), RouterDims{4, 8, 2, true});
  ASSERT_TRUE(router.ok());
  at::Tensor ids = at::tensor({3, 7, 3, 100, 7, 3}).reshape({2, 3});
  RoutingDecision a = (*router)->Route(at::randn({2, 3, 4}), WithIds(ids));
  RoutingDecision b = (*router)->Route(at::randn({2, 3, 4}), WithIds(ids));
  ExpectWellFormed(a, 2, 3, 8);
  EXPECT_TRUE(at::equal(a.selected, b.selected));
  at::Tensor flat = a.selected.reshape({6, 8});
  EXPECT_TRUE(at::equal(flat[0], flat[2]));  // id 3
  EXPECT_TRUE(at::equal(flat[0], flat[5]));  // id 3
  EXPECT_TRUE(at::equal(flat[1], flat[4]));  // id 7
  EXPECT_TRUE((a.selected.sum(-1) == 2).all().item<bool>());

  // The salt is a buffer drawn at construction: the same seed rebuilds the
  // same map, another seed (almost surely) a different one.
  at::Tensor many = at::arange(2000).reshape({2, 1000});
  auto map_for_seed = [&](uint64_t seed) {
    torch::manual_seed(seed);
    auto r = ResolveAndCreate(Spec(2, true), RouterDims{4, 8, 2, true});
    return (*r)->Route(at::zeros({2, 1000, 4}), WithIds(many)).selected;
  };
  EXPECT_TRUE(at::equal(map_for_seed(7), map_for_seed(7)));
  EXPECT_FALSE(at::equal(map_for_seed(7), map_for_seed(8)));
  EXPECT_EQ((*router)->named_buffers().size(), 1u);
  EXPECT_TRUE((*router)->parameters().empty());
}

TEST(RandomTest, DeclarationsAndErrors) {
  const RouterDims dims{4, 8, 2, true};
  for (bool fixed : {false, true}) {
    auto router = ResolveAndCreate(Spec(1, fixed), dims);
    ASSERT_TRUE(router.ok());
    EXPECT_TRUE((*router)->IsCausal(true));
    EXPECT_TRUE((*router)->IsCausal(false));
  }
  auto fixed = ResolveAndCreate(Spec(1, true), dims);
  EXPECT_THROW((*fixed)->Route(at::randn({1, 2, 4}), RoutingContext{}), c10::Error);

  RouterSpec spec;
  spec.set_name("random");
  spec.set_top_k(2);
  (*RouterRegistry().Find("random"))->resolve(&spec, dims);
  EXPECT_TRUE(spec.has_random());
  auto bad = ResolveAndCreate(Spec(1.5), dims);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("router.top_k"));
  spec = Spec(1);
  spec.mutable_xmoe();
  bad = ResolveAndCreate(spec, dims);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("router.random"));
}

}  // namespace
}  // namespace moelab
