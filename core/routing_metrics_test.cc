#include "core/routing_metrics.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "absl/base/casts.h"
#include "core/layer_metric.h"
#include "google/protobuf/unknown_field_set.h"
#include "google/protobuf/util/message_differencer.h"

namespace moelab {
namespace {

using ::google::protobuf::util::MessageDifferencer;

// A registered metric that applies to decisions with dropped tokens only:
// the share of tokens dropped.
MOELAB_REGISTER_LAYER_METRIC("test_dropped_share",
                             {.description = "share of tokens dropped (test)",
                              .title = "Dropped (test)",
                              .accumulate = [](const RoutingDecision& d) -> LayerMetricSum {
                                if (!d.dropped.defined()) return {};
                                return {.sum = d.dropped.sum().item<double>(),
                                        .count = static_cast<double>(d.dropped.numel())};
                              }});

// A decision over 1 x N tokens from per-token weights [N, E] (0 = not routed).
RoutingDecision Decision(std::vector<std::vector<float>> weights) {
  const int64_t n = weights.size(), e = weights[0].size();
  at::Tensor w = at::zeros({1, n, e});
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < e; ++j) w[0][i][j] = weights[i][j];
  RoutingDecision d;
  d.combine_weights = w;
  d.selected = w > 0;
  d.gate_probs = w;
  return d;
}

TEST(RoutingMetricsTest, FluctuationOnAHandMadeTrace) {
  // Four tokens, three experts, top-2. Epoch 1 -> epoch 2:
  // token 0: same set, same top-1; token 1: same set, top-1 flips;
  // token 2: set changes, top-1 kept; token 3: no expert -> expert 2.
  ProbeAssignment before =
      AssignmentOf(Decision({{0.7, 0.3, 0}, {0.6, 0.4, 0}, {0.5, 0, 0.2}, {0, 0, 0}}));
  ProbeAssignment after =
      AssignmentOf(Decision({{0.8, 0.2, 0}, {0.4, 0.6, 0}, {0.5, 0.1, 0}, {0, 0, 1}}));
  EXPECT_EQ(before.top1[3].item<int64_t>(), -1);
  EXPECT_DOUBLE_EQ(Top1Fluctuation(before, after), 2.0 / 4);
  EXPECT_DOUBLE_EQ(SetFluctuation(before, after), 2.0 / 4);
  EXPECT_DOUBLE_EQ(Top1Fluctuation(after, after), 0);
}

TEST(RoutingMetricsTest, LoadAndEntropyOnAHandMadeTrace) {
  // Pairs per expert: e0 = 3, e1 = 1, e2 = 0 -> mean 4/3.
  RoutingDecision d = Decision({{0.5, 0.5, 0}, {1, 0, 0}, {1, 0, 0}});
  d.dropped = at::tensor({0, 1, 0}).to(at::kBool).reshape({1, 3});
  LayerRoutingAccumulator acc(3);
  acc.Add(d);
  LayerRoutingMetrics m = acc.Finish(/*layer=*/2);
  EXPECT_EQ(m.layer(), 2);
  ASSERT_EQ(m.expert_share_size(), 3);
  EXPECT_DOUBLE_EQ(m.expert_share(0), 0.75);
  EXPECT_DOUBLE_EQ(m.expert_share(1), 0.25);
  EXPECT_DOUBLE_EQ(m.expert_share(2), 0);
  const double mean = 4.0 / 3;
  const double std =
      std::sqrt(((3 - mean) * (3 - mean) + (1 - mean) * (1 - mean) + mean * mean) / 3);
  EXPECT_NEAR(m.load_cv(), std / mean, 1e-12);
  EXPECT_NEAR(m.load_max_over_mean(), 3 / mean, 1e-12);
  EXPECT_EQ(m.dead_experts(), 1);
  EXPECT_NEAR(m.values().at("experts_per_token"), 4.0 / 3, 1e-12);
  EXPECT_NEAR(m.values().at("dropped_fraction"), 1.0 / 3, 1e-12);
  // Entropies: ln 2 for the first token, 0 for the others.
  EXPECT_NEAR(m.values().at("gate_entropy"), std::log(2.0) / 3, 1e-6);
  EXPECT_EQ(m.values().count("aggregated_entropy"), 0u);
}

TEST(RoutingMetricsTest, AccumulatesAcrossBatches) {
  LayerRoutingAccumulator acc(2);
  acc.Add(Decision({{1, 0}}));
  acc.Add(Decision({{0, 1}, {0, 1}, {0, 1}}));
  LayerRoutingMetrics m = acc.Finish(0);
  EXPECT_EQ(acc.tokens(), 4);
  EXPECT_DOUBLE_EQ(m.expert_share(0), 0.25);
  EXPECT_DOUBLE_EQ(m.load_cv(), 0.5);
}

TEST(RoutingMetricsTest, AggregationDiagnosticsAveragedOverTokens) {
  // Batch 1: two tokens with self-weights 1 and 0.5 (neighbours 1 and 2);
  // batch 2: one token with self-weight 0.25 over four tokens (neighbours 4).
  RoutingDecision first = Decision({{1, 0}, {0, 1}});
  first.aggregation_self_weight = at::tensor({1.0f, 0.5f}).reshape({1, 2});
  first.aggregation_effective_neighbours = at::tensor({1.0f, 2.0f}).reshape({1, 2});
  RoutingDecision second = Decision({{1, 0}});
  second.aggregation_self_weight = at::tensor({0.25f}).reshape({1, 1});
  second.aggregation_effective_neighbours = at::tensor({4.0f}).reshape({1, 1});
  LayerRoutingAccumulator acc(2);
  acc.Add(first);
  acc.Add(second);
  const LayerRoutingMetrics m = acc.Finish(0);
  EXPECT_TRUE(m.values().count("aggregation_self_weight"));
  EXPECT_NEAR(m.values().at("aggregation_self_weight"), (1 + 0.5 + 0.25) / 3, 1e-7);
  EXPECT_NEAR(m.values().at("aggregation_effective_neighbours"), 7.0 / 3, 1e-7);

  LayerRoutingAccumulator plain(2);
  plain.Add(Decision({{1, 0}}));
  EXPECT_FALSE(plain.Finish(0).values().count("aggregation_self_weight"));
}

// A sharded evaluation: each process accumulates its batches, the Sums
// are added element-wise, and SetSums of the total finishes as one
// accumulator over every batch would (every field: load, drops, entropies,
// aggregation diagnostics, a registered metric).
TEST(RoutingMetricsTest, SummedSumsEqualOneAccumulatorOverEveryBatch) {
  RoutingDecision first = Decision({{0.6, 0.4, 0}, {0, 0.3, 0.7}});
  first.dropped = at::tensor({0, 1}).reshape({1, 2});
  first.aggregated_probs = at::tensor({0.5f, 0.5f, 0.f, 0.2f, 0.2f, 0.6f}).reshape({1, 2, 3});
  first.aggregation_self_weight = at::tensor({0.9f, 0.4f}).reshape({1, 2});
  first.aggregation_effective_neighbours = at::tensor({1.2f, 2.5f}).reshape({1, 2});
  RoutingDecision second = Decision({{1, 0, 0}, {0, 0, 1}, {0.5, 0.5, 0}});
  LayerRoutingAccumulator both(3), a(3), b(3);
  both.Add(first);
  both.Add(second);
  a.Add(first);
  b.Add(second);
  ASSERT_EQ(a.Sums().size(), b.Sums().size());
  std::vector<double> total = a.Sums();
  for (size_t i = 0; i < total.size(); ++i) total[i] += b.Sums()[i];
  LayerRoutingAccumulator summed(3);
  summed.SetSums(total);
  const LayerRoutingMetrics expected = both.Finish(0);
  // (Equals: a map's serialised order is unspecified.)
  EXPECT_TRUE(MessageDifferencer::Equals(summed.Finish(0), expected))
      << summed.Finish(0).DebugString() << " vs " << expected.DebugString();
  // The case is not trivial: every kind of field is set.
  EXPECT_EQ(summed.tokens(), 5);
  EXPECT_NEAR(expected.values().at("dropped_fraction"), 1.0 / 5, 1e-9);
  EXPECT_TRUE(expected.values().count("aggregation_self_weight"));
  EXPECT_GT(expected.values().at("aggregated_entropy"), 0);
  EXPECT_NEAR(expected.values().at("test_dropped_share"), 0.5, 1e-9);
}

// A checkpoint's run record written before the move holds the old fields
// as unknown fields of each layer (their numbers are reserved now).
TEST(RoutingMetricsTest, AnOldBinaryRunRecordGetsItsLayerFieldsInValues) {
  auto old_layer = [](double aggregated_entropy, bool has_aggregation) {
    LayerRoutingMetrics layer;
    layer.set_load_cv(0.5);
    google::protobuf::UnknownFieldSet* old = layer.GetReflection()->MutableUnknownFields(&layer);
    auto fixed = [](double v) { return absl::bit_cast<uint64_t>(v); };
    old->AddFixed64(4, fixed(1.25));  // gate_entropy
    if (aggregated_entropy != 0) old->AddFixed64(5, fixed(aggregated_entropy));
    old->AddFixed64(10, fixed(0.125));  // dropped_fraction
    old->AddFixed64(11, fixed(2));      // experts_per_token
    if (has_aggregation) {
      old->AddVarint(14, 1);
      old->AddFixed64(15, fixed(0.375));
      old->AddFixed64(16, fixed(3.5));
    }
    return layer;
  };
  RunResult written;
  *written.add_epochs()->add_layers() = old_layer(1.0625, true);
  *written.mutable_final()->add_layers() = old_layer(0, false);
  RunResult read;
  ASSERT_TRUE(read.ParseFromString(written.SerializeAsString()));
  MoveLegacyLayerFields(&read);
  const LayerRoutingMetrics& aggregating = read.epochs(0).layers(0);
  EXPECT_EQ(aggregating.load_cv(), 0.5);
  EXPECT_EQ(aggregating.values().at("gate_entropy"), 1.25);
  EXPECT_EQ(aggregating.values().at("aggregated_entropy"), 1.0625);
  EXPECT_EQ(aggregating.values().at("dropped_fraction"), 0.125);
  EXPECT_EQ(aggregating.values().at("experts_per_token"), 2);
  EXPECT_EQ(aggregating.values().at("aggregation_self_weight"), 0.375);
  EXPECT_EQ(aggregating.values().at("aggregation_effective_neighbours"), 3.5);
  EXPECT_TRUE(aggregating.GetReflection()->GetUnknownFields(aggregating).empty());
  const LayerRoutingMetrics& plain = read.final().layers(0);
  EXPECT_EQ(plain.values().size(), 3u);  // H(r), experts per token, drops
  EXPECT_EQ(plain.values().count("aggregation_self_weight"), 0u);
  // A current record is left as it is, also one with a field this build
  // does not know (from a later one) that is not an old metric.
  RunResult current = read;
  current.mutable_epochs(0)
      ->mutable_layers(0)
      ->GetReflection()
      ->MutableUnknownFields(current.mutable_epochs(0)->mutable_layers(0))
      ->AddVarint(99, 7);
  const RunResult before = current;
  MoveLegacyLayerFields(&current);
  EXPECT_TRUE(MessageDifferencer::Equals(current, before));
}

TEST(RoutingMetricsTest, HeadChangeOnProbeTokens) {
  RoutingDecision before = Decision({{1, 0}, {1, 0}, {0, 1}, {0, 1}});
  before.aggregation_head = at::tensor({0, 1, 2, 3}, at::kLong).reshape({1, 4});
  RoutingDecision after = Decision({{1, 0}, {1, 0}, {0, 1}, {0, 1}});
  after.aggregation_head = at::tensor({0, 2, 2, 0}, at::kLong).reshape({1, 4});
  double share = -1;
  ASSERT_TRUE(HeadChange(AssignmentOf(before), AssignmentOf(after), &share));
  EXPECT_DOUBLE_EQ(share, 0.5);
  // A router without heads has no head change.
  EXPECT_FALSE(
      HeadChange(AssignmentOf(Decision({{1, 0}})), AssignmentOf(Decision({{1, 0}})), &share));
}

TEST(RoutingMetricsTest, PearsonCorrelation) {
  EXPECT_NEAR(PearsonCorrelation({1, 2, 3}, {2, 4, 6}), 1, 1e-12);
  EXPECT_NEAR(PearsonCorrelation({1, 2, 3}, {3, 2, 1}), -1, 1e-12);
  EXPECT_EQ(PearsonCorrelation({1, 1, 1}, {3, 2, 1}), 0);
}

}  // namespace
}  // namespace moelab
