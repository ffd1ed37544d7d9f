#include "routers/hash.h"

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "routers/router_util.h"
#include "routers/testing/router_test_util.h"

namespace moelab {
namespace {

using ::moelab::testing::ExpectWellFormed;
using ::moelab::testing::ResolveAndCreate;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

RouterSpec Spec(double k, uint64_t salt) {
  RouterSpec spec;
  spec.set_name("hash");
  spec.set_top_k(k);
  spec.mutable_hash()->set_salt(salt);
  return spec;
}

RoutingContext WithIds(const at::Tensor& ids) {
  RoutingContext context;
  context.token_ids = ids;
  return context;
}

// Values from an independent Python splitmix64 (seed 0 gives the published
// first output 0xE220A8397B1DCDAF).
TEST(HashTest, KnownHashValues) {
  EXPECT_THAT(HashedExperts(0, 0, 8, 2), ElementsAre(7, 6));
  EXPECT_THAT(HashedExperts(1, 0, 8, 2), ElementsAre(6, 1));
  EXPECT_THAT(HashedExperts(2, 0, 8, 2), ElementsAre(1, 2));
  EXPECT_THAT(HashedExperts(12345, 0, 8, 2), ElementsAre(7, 4));
  EXPECT_THAT(HashedExperts(7, 42, 4, 3), ElementsAre(0, 1, 2));
  EXPECT_THAT(HashedExperts(99, 42, 16, 4), ElementsAre(4, 1, 6, 15));
}

TEST(HashTest, RoutesByHandValues) {
  auto router = ResolveAndCreate(Spec(2, 0), RouterDims{4, 8, 2, true});
  ASSERT_TRUE(router.ok()) << router.status();
  at::Tensor ids = at::tensor({0, 1, 2, 12345}).reshape({1, 4});
  RoutingDecision d = (*router)->Route(at::randn({1, 4, 4}), WithIds(ids));
  ExpectWellFormed(d, 1, 4, 8);
  at::Tensor expected = at::zeros({1, 4, 8});
  for (auto [t, e] : std::vector<std::pair<int, int>>{
           {0, 7}, {0, 6}, {1, 6}, {1, 1}, {2, 1}, {2, 2}, {3, 7}, {3, 4}}) {
    expected[0][t][e] = 0.5;
  }
  EXPECT_TRUE(at::equal(d.combine_weights, expected));
  EXPECT_TRUE(at::equal(d.gate_probs, expected));
  EXPECT_TRUE(at::equal(d.selected, expected > 0));
  EXPECT_FALSE(d.dropped.defined());
}

TEST(HashTest, DeterministicDistinctAndIndependentOfHidden) {
  const RouterDims dims{4, 8, 2, true};
  auto a = ResolveAndCreate(Spec(3, 5), dims);
  auto b = ResolveAndCreate(Spec(3, 5), dims);
  ASSERT_TRUE(a.ok() && b.ok());
  at::Tensor ids = at::randint(0, 50, {3, 20}, at::kLong);
  RoutingDecision first = (*a)->Route(at::randn({3, 20, 4}), WithIds(ids));
  RoutingDecision again = (*b)->Route(at::randn({3, 20, 4}), WithIds(ids));
  EXPECT_TRUE(at::equal(first.selected, again.selected));
  EXPECT_TRUE((first.selected.sum(-1) == 3).all().item<bool>());
  // Equal ids get equal experts wherever they occur.
  at::Tensor flat_ids = ids.reshape({-1});
  at::Tensor flat = first.selected.reshape({-1, 8});
  for (int64_t i = 1; i < flat_ids.size(0); ++i) {
    at::Tensor same = (flat_ids == flat_ids[i]).nonzero().reshape({-1});
    EXPECT_TRUE(
        at::equal(flat.index_select(0, same), flat[i].unsqueeze(0).expand({same.size(0), 8})));
  }
}

TEST(HashTest, TableGrowsWithLargerIds) {
  auto router = ResolveAndCreate(Spec(2, 9), RouterDims{4, 6, 2, true});
  ASSERT_TRUE(router.ok());
  for (int64_t max_id : {int64_t{3}, int64_t{10}, int64_t{1000}, int64_t{1} << 40}) {
    at::Tensor ids = at::tensor({int64_t{0}, max_id / 2, max_id}).reshape({1, 3});
    RoutingDecision d = (*router)->Route(at::randn({1, 3, 4}), WithIds(ids));
    for (int t = 0; t < 3; ++t) {
      for (int64_t e : HashedExperts(ids[0][t].item<int64_t>(), 9, 6, 2)) {
        EXPECT_TRUE(d.selected[0][t][e].item<bool>()) << "id " << ids[0][t].item<int64_t>();
      }
    }
  }
}

TEST(HashTest, SaltChangesTheMapAndLoadIsBalanced) {
  const RouterDims dims{4, 8, 2, true};
  auto a = ResolveAndCreate(Spec(2, 1), dims);
  auto b = ResolveAndCreate(Spec(2, 2), dims);
  ASSERT_TRUE(a.ok() && b.ok());
  at::Tensor ids = at::arange(4000).reshape({4, 1000});
  at::Tensor sa = (*a)->Route(at::zeros({4, 1000, 4}), WithIds(ids)).selected;
  at::Tensor sb = (*b)->Route(at::zeros({4, 1000, 4}), WithIds(ids)).selected;
  EXPECT_FALSE(at::equal(sa, sb));
  // 8000 pairs over 8 experts: about 1000 each.
  at::Tensor load = sa.sum(at::IntArrayRef{0, 1}).to(at::kFloat);
  EXPECT_TRUE(((load - 1000).abs() < 150).all().item<bool>()) << load;
}

TEST(HashTest, DeclarationsAndErrors) {
  const RouterDims dims{4, 8, 2, true};
  auto router = ResolveAndCreate(Spec(1, 0), dims);
  ASSERT_TRUE(router.ok());
  EXPECT_TRUE((*router)->IsCausal(true));
  EXPECT_TRUE((*router)->IsCausal(false));
  EXPECT_TRUE((*router)->parameters().empty());
  EXPECT_THROW((*router)->Route(at::randn({1, 2, 4}), RoutingContext{}), c10::Error);

  RouterSpec spec;
  spec.set_name("hash");
  spec.set_top_k(2);
  (*RouterRegistry().Find("hash"))->resolve(&spec, dims);
  EXPECT_TRUE(spec.has_hash());

  auto bad = ResolveAndCreate(Spec(9, 0), dims);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("router.top_k"));
  spec = Spec(2, 0);
  spec.mutable_random();
  bad = ResolveAndCreate(spec, dims);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("router.hash"));
}

}  // namespace
}  // namespace moelab
