#ifndef MOELAB_CORE_ROUTER_H_
#define MOELAB_CORE_ROUTER_H_

// The router contract: what every routing plugin receives and returns.
//
// A router is a torch::nn::Module that maps the tokens entering one MoE layer
// to a RoutingDecision. Routers live in routers/, one .cc/.h pair each, and
// register with MOELAB_REGISTER_ROUTER; nothing in core/ names a concrete
// router.
//
// Example: a router that sends every token to its single best expert with
// weight 1 (top-1 hard routing), in routers/hard_top1.cc:
//
//   class HardTop1Router : public Router {
//    public:
//     HardTop1Router(const RouterSpec& spec, const RouterDims& dims)
//         : num_experts_(dims.num_experts) {
//       gate_weight_ = register_parameter(  // [E, D]
//           "gate_weight", InitGateWeight(dims.num_experts, dims.model_dim));
//     }
//     RoutingDecision Route(const at::Tensor& hidden,  // [B, T, D]
//                           const RoutingContext& context) override {
//       RoutingDecision d;
//       d.logits = GateLogits(hidden, gate_weight_);    // [B, T, E]
//       d.gate_probs = at::softmax(d.logits, -1);        // r
//       d.selected = IndicesToMask(d.gate_probs.argmax(-1, /*keepdim=*/true),
//                                  num_experts_);        // [B, T, E] bool
//       // Straight-through: weight 1 forward, the gate's gradient backward.
//       const at::Tensor r = (d.gate_probs * d.selected).sum(-1, true);
//       d.combine_weights = d.selected * (1 + r - r.detach());
//       return d;
//     }
//     bool IsCausal(bool) const override { return true; }  // per-token
//
//    private:
//     int64_t num_experts_;
//     at::Tensor gate_weight_;
//   };
//
//   MOELAB_REGISTER_ROUTER("hard_top1",
//       {// With an options message in RouterSpec's oneof, name it here:
//        // .options = RouterSpec::kHardTop1; without one, any is refused.
//        .description = "every token to its best expert, weight 1",
//        .validate = [](const RouterSpec& spec, const RouterDims&) {
//          // Errors name the field: "router.top_k: hard_top1 needs 1, got 2".
//          return spec.top_k() == 1 ? absl::OkStatus() : ...;
//        },
//        .create = [](const RouterSpec& spec, const RouterDims& dims)
//            -> std::shared_ptr<Router> {
//          return std::make_shared<HardTop1Router>(spec, dims);
//        }});
//
// (GateLogits, InitGateWeight and IndicesToMask are routers/router_util.h's),
// plus a cc_library with alwayslink = 1 in //routers:all_routers and a test
// beside it.

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/registry.h"
#include "proto/experiment.pb.h"

namespace moelab {

// Everything a router may read besides the hidden states.
struct RoutingContext {
  // [B, T] int64: token ids (LM) or patch positions (vision).
  at::Tensor token_ids;
  // [B, T] bool, true at real tokens; undefined means no padding.
  at::Tensor padding_mask;
  bool training = false;
  // True when the model is causal (an autoregressive LM).
  bool causal = false;
  // Filled only for routers whose NeedsAttention() is true, by the attention
  // layer right before the MoE layer:
  // [B, H, T, T] attention probabilities (rows sum to one), exactly those
  // the attention layer used.
  at::Tensor attention_probs;
  // [B, H, T, D] per-head value contributions in model space: head h's value
  // projection of token j mapped through head h's slice of the output
  // projection, so that sum_h sum_j A_h[i, j] v_h[j] is the attention output.
  at::Tensor attention_values;
};

// A router's output for one MoE layer. [B, T, E] tensors cover every
// (token, expert) pair.
struct RoutingDecision {
  // [B, T, E] raw router scores (logits) before any normalisation.
  at::Tensor logits;
  // [B, T, E] the gate distribution r of each token (sums to one over E for
  // softmax gates).
  at::Tensor gate_probs;
  // [B, T, E] the aggregated distribution p (graph-of-tokens routers);
  // undefined for routers that do not aggregate.
  at::Tensor aggregated_probs;
  // [B, T, E] bool: the (token, expert) pairs that are computed. A token may
  // have any number of experts, 0..E.
  at::Tensor selected;
  // [B, T, E] float: combine weight of each selected pair, 0 elsewhere;
  // differentiable with respect to the router's parameters and the input.
  at::Tensor combine_weights;
  // [B, T] bool: tokens that lost at least one of their choices to expert
  // capacity; undefined when the router never drops.
  at::Tensor dropped;
  // Routers that aggregate the gate over tokens, p_i = sum_j W_ij r_j (the
  // graph-of-tokens routers), describe W here for the analytics; undefined
  // for the others. Detached, float32.
  // [B, T] W_ii: the weight token i keeps on itself.
  at::Tensor aggregation_self_weight;
  // [B, T] exp(H(W_i)): the effective number of tokens i aggregates over.
  at::Tensor aggregation_effective_neighbours;
  // [B, T] int64: the attention head whose posterior token i aggregates with
  // (attention-aware; the largest-weight head when heads are mixed).
  at::Tensor aggregation_head;
  // Auxiliary losses, already multiplied by their coefficients, by name
  // ("load_balance", "z_loss"). Scalars.
  std::vector<std::pair<std::string, at::Tensor>> aux_losses;
};

class Router : public torch::nn::Module {
 public:
  // hidden: [B, T, D] the token representations entering the MoE layer.
  virtual RoutingDecision Route(const at::Tensor& hidden, const RoutingContext& context) = 0;

  // True when Route reads context.attention_probs/attention_values.
  virtual bool NeedsAttention() const { return false; }

  // True when the decision for token i depends only on tokens 0..i of its own
  // sequence, given a model that is (or is not) causal. Checked for every
  // router by core/causality_test.cc.
  virtual bool IsCausal(bool causal_model) const = 0;

  // Under data parallelism each worker routes its shard of the batch. A
  // router whose selection spans the batch (capacity, expert choice,
  // per-batch top-c, balancing) says here, in one phrase for the run's
  // record, whether it spans each worker's shard or the whole batch (by
  // exchanging counts or scores, core/batch_collective.h). Empty: each token
  // (or sequence) is routed on its own, which sharding cannot change.
  virtual std::string BatchScope() const { return ""; }
};

// Shapes a router is built for.
struct RouterDims {
  int64_t model_dim = 0;    // D
  int64_t num_experts = 0;  // E
  int64_t num_heads = 0;    // H of the attention layer before the MoE layer
  bool causal_model = false;
};

struct RouterRegistration {
  // The field of RouterSpec's options oneof that this router reads (e.g.
  // RouterSpec::kTokenChoice); OPTIONS_NOT_SET when it takes none. Another
  // router's options are refused for it (core/plugin_options.h): `resolve`
  // and `validate` only ever see the router's own options or none.
  RouterSpec::OptionsCase options = RouterSpec::OPTIONS_NOT_SET;
  // One line for `run --list`.
  std::string description;
  // Fills documented defaults into the router's options in place, so that
  // the printed, saved spec shows every value the run used. May be empty.
  std::function<void(RouterSpec*, const RouterDims&)> resolve;
  // Checks a resolved spec; errors name the field ("router.unified.alpha").
  std::function<absl::Status(const RouterSpec&, const RouterDims&)> validate;
  // Builds the router from a spec that passed `validate`.
  std::function<std::shared_ptr<Router>(const RouterSpec&, const RouterDims&)> create;
  // Whether the router accepts a fractional top_k.
  bool fractional_top_k = false;
};

Registry<RouterRegistration>& RouterRegistry();

// Fills the router's documented defaults (registration.resolve), unless the
// spec holds another router's options, which ValidateRouterSpec refuses.
void ResolveRouterSpec(const RouterRegistration& registration, RouterSpec* spec,
                       const RouterDims& dims);

// The checks every router spec gets before its registration's `validate`:
// the load-balance enums and the options oneof; then `validate`.
absl::Status ValidateRouterSpec(const RouterRegistration& registration, const RouterSpec& spec,
                                const RouterDims& dims);

// Looks the router up by spec.name, validates and builds it.
absl::StatusOr<std::shared_ptr<Router>> CreateRouter(const RouterSpec& spec,
                                                     const RouterDims& dims);

// Checks that the load-balance convention enums hold known values (every
// router shares them; CreateRouter calls it).
absl::Status CheckLoadBalanceConventions(const RouterSpec& spec);

// Checks spec.top_k against the router's registration and dims: > 0,
// whole unless the router accepts fractional k, at most dims.num_experts.
absl::Status CheckTopK(const RouterSpec& spec, const RouterRegistration& registration,
                       const RouterDims& dims);

}  // namespace moelab

// Registers a router under `name`: MOELAB_REGISTER_ROUTER("token_choice",
// {.description = ..., .resolve = ..., .validate = ..., .create = ...});
#define MOELAB_REGISTER_ROUTER(name, ...)                                        \
  static const bool MOELAB_REGISTRY_CONCAT(kMoelabRouterRegistered_, __LINE__) = \
      ::moelab::RouterRegistry().Register(name, ::moelab::RouterRegistration __VA_ARGS__)

#endif  // MOELAB_CORE_ROUTER_H_
