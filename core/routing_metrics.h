#ifndef MOELAB_CORE_ROUTING_METRICS_H_
#define MOELAB_CORE_ROUTING_METRICS_H_

// Routing analytics: fluctuation between epochs, entropy and load, computed
// from RoutingDecisions. Definitions follow ../shared/DESIGN.md "Metrics".

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/layer_metric.h"
#include "core/router.h"
#include "proto/result.pb.h"

namespace moelab {

// A router whose mean self-weight W_ii exceeds this in some MoE layer is
// effectively the identity there (p = r): it routes as token choice does.
// Since p_i - r_i = sum_j W_ij (r_j - r_i), a token keeping W_ii of its own
// gate moves at most 1 - W_ii of r's mass: at 0.9, at most 10%. Measured on
// SOTU (cpu_tiny LM, 600 steps): the paper's literal similarity (raw dot
// products, tau = 1) ends at 0.92-0.94 with H(p) - H(r) = 0.0007 nats, our
// cosine default at 0.43.
inline constexpr double kIdentityAggregationSelfWeight = 0.9;

// Which experts a fixed set of N probe tokens went to in one layer.
struct ProbeAssignment {
  // [N] int64: the expert with the largest combine weight, -1 when the
  // token got no expert (possible with expert-choice and unified routing).
  at::Tensor top1;
  // [N, E] bool: the token's selected experts.
  at::Tensor selected;
  // [N] int64: the attention head the token aggregated with; undefined for
  // routers that do not choose one.
  at::Tensor head;
};

// Flattens a decision over [B, T] tokens into N = B*T probe tokens.
ProbeAssignment AssignmentOf(const RoutingDecision& decision);

// Share of tokens whose top-1 expert differs between `before` and `after`.
double Top1Fluctuation(const ProbeAssignment& before, const ProbeAssignment& after);

// Share of tokens whose selected expert set differs.
double SetFluctuation(const ProbeAssignment& before, const ProbeAssignment& after);

// Share of tokens whose aggregation head differs; false when either side
// has no head (or they cover different probe sets).
bool HeadChange(const ProbeAssignment& before, const ProbeAssignment& after, double* share);

// Accumulates one MoE layer's routing over many batches.
class LayerRoutingAccumulator {
 public:
  explicit LayerRoutingAccumulator(int64_t num_experts);

  void Add(const RoutingDecision& decision);

  // The load: per-expert share of routed pairs, coefficient of variation
  // (population std / mean of the per-expert pair counts), max/mean and
  // experts with no pair; and in values, every registered layer metric
  // (core/layer_metric.h, core/metrics/: entropies, experts per token,
  // drops, aggregation, ...) that applied.
  LayerRoutingMetrics Finish(int layer) const;

  int64_t tokens() const { return tokens_; }

  // The sums behind Finish as one vector (the same length for every
  // accumulator of E experts), and back: a sharded evaluation sums its
  // processes' vectors element-wise and sets the total.
  std::vector<double> Sums() const;
  void SetSums(const std::vector<double>& sums);

 private:
  int64_t num_experts_;
  std::vector<double> pairs_per_expert_;
  int64_t tokens_ = 0;
  // Registered layer metrics by name: (sum, count) over the batches added.
  std::map<std::string, LayerMetricSum> registered_;
};

// A registered metric's value in `layer`; nullopt where it did not apply.
std::optional<double> LayerValue(const LayerRoutingMetrics& layer, const std::string& name);

// The reserved fields of LayerRoutingMetrics (proto/result.proto): number
// and old name.
inline constexpr std::pair<int, const char*> kLegacyLayerFields[] = {
    {4, "gate_entropy"},
    {5, "aggregated_entropy"},
    {10, "dropped_fraction"},
    {11, "experts_per_token"},
    {14, "has_aggregation"},
    {15, "aggregation_self_weight"},
    {16, "aggregation_effective_neighbours"}};

// The registered metrics' values that a layer's fields stand for in a
// result written before entropies, experts per token, drops and the
// aggregation diagnostics became registered metrics: `old_fields` by old
// field name ("gate_entropy", ..., "has_aggregation" as 0 or 1; an absent
// one was 0). Empty when it holds none. The one statement of which old
// field applied when, for both readers below and ParseRunResultJson.
std::map<std::string, double> LegacyLayerValues(const std::map<std::string, double>& old_fields);

// A RunResult read in binary form from a checkpoint written before the
// entropies, experts per token, drops and aggregation diagnostics became
// registered metrics holds them as unknown fields of each layer (their
// numbers are reserved now): moves them into `values` under the metrics'
// names, by the rules ParseRunResultJson (core/run_outputs.h) applies to a
// result.json of that time.
void MoveLegacyLayerFields(RunResult* result);

// Pearson correlation of two equally long series (0 when either is flat).
double PearsonCorrelation(const std::vector<double>& x, const std::vector<double>& y);

}  // namespace moelab

#endif  // MOELAB_CORE_ROUTING_METRICS_H_
