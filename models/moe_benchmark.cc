// Training-step timings of the MoE layer's dispatch against the two plain
// alternatives, and of a whole small LM step (DESIGN.md's profiled setting:
// V 10000, D 128, 4 layers, 8 experts, top-2, expert width 512, T 128, B 16).
//
//   bazel run -c opt //models:moe_benchmark -- --benchmark_min_time=2
//
// Variants, each forward + backward of one MoE layer on N = B*T tokens:
//   Grouped:  this library (GroupedExpertFfn, one [E, D, H] gradient buffer)
//   Sliced:   per expert, gather its rows and run w1[e], w2[e] through plain
//             autograd (each slice's backward zero-fills a full-size grad)
//   Padded:   bmm over [E, C_max, D] groups padded to the largest group

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/ops/baddbmm.h>
#include <torch/csrc/autograd/generated/variable_factories.h>

#include <memory>
#include <vector>

#include "benchmark/benchmark.h"
#include "core/model.h"
#include "core/router.h"
#include "models/feed_forward.h"
#include "models/moe_layer.h"
#include "models/transformer_lm.h"

namespace moelab {
namespace {

constexpr int64_t kB = 16, kT = 128, kD = 128, kE = 8, kH = 512, kK = 2;

RouterSpec TopTwo() {
  RouterSpec spec;
  spec.set_name("token_choice");
  spec.set_top_k(kK);
  return spec;
}

MoeLayer MakeLayer() {
  const RouterDims dims{.model_dim = kD, .num_experts = kE, .num_heads = 4, .causal_model = true};
  return MoeLayer(MoeLayerOptions(kD, kE, kH), *CreateRouter(TopTwo(), dims));
}

void BM_MoeGrouped(benchmark::State& state) {
  at::set_num_threads(state.range(0));
  torch::manual_seed(0);
  MoeLayer layer = MakeLayer();
  const at::Tensor hidden = torch::randn({kB, kT, kD}).requires_grad_(true);
  for (auto _ : state) {
    layer->zero_grad();
    layer->forward(hidden, RoutingContext()).output.sum().backward();
  }
  state.SetItemsProcessed(state.iterations() * kB * kT);
}

// Experts sliced out of the batched parameters inside autograd.
at::Tensor SlicedExperts(MoeLayerImpl& layer, const at::Tensor& hidden, const RoutingDecision& d) {
  const at::Tensor x = hidden.reshape({-1, kD});
  const at::Tensor selected = d.selected.reshape({-1, kE});
  const at::Tensor combine = d.combine_weights.reshape({-1, kE});
  at::Tensor out = at::zeros_like(x);
  for (int64_t e = 0; e < kE; ++e) {
    const at::Tensor rows = at::nonzero(selected.select(1, e)).squeeze(1);
    if (rows.numel() == 0) continue;
    const at::Tensor h =
        ApplyActivation(at::addmm(layer.b1[e], x.index_select(0, rows), layer.w1[e]), GELU);
    const at::Tensor y = at::addmm(layer.b2[e], h, layer.w2[e]) *
                         combine.select(1, e).index_select(0, rows).unsqueeze(1);
    out = out.index_add(0, rows, y);
  }
  return out;
}

void BM_MoeSliced(benchmark::State& state) {
  at::set_num_threads(state.range(0));
  torch::manual_seed(0);
  MoeLayer layer = MakeLayer();
  const at::Tensor hidden = torch::randn({kB, kT, kD}).requires_grad_(true);
  for (auto _ : state) {
    layer->zero_grad();
    RoutingDecision d = layer->router()->Route(hidden, RoutingContext());
    SlicedExperts(*layer, hidden, d).sum().backward();
  }
  state.SetItemsProcessed(state.iterations() * kB * kT);
}

// Groups padded to the largest one and run as one batched matmul.
at::Tensor PaddedExperts(MoeLayerImpl& layer, const at::Tensor& hidden, const RoutingDecision& d) {
  const at::Tensor x = hidden.reshape({-1, kD});
  const at::Tensor pairs = at::nonzero(d.selected.reshape({-1, kE}).t());  // [P, 2] (e, token)
  const at::Tensor expert = pairs.select(1, 0), token = pairs.select(1, 1);
  const at::Tensor counts = at::bincount(expert, {}, kE);
  const int64_t capacity = counts.max().item<int64_t>();
  const at::Tensor starts = counts.cumsum(0) - counts;
  const at::Tensor slot = at::arange(pairs.size(0)) - starts.index_select(0, expert);
  const at::Tensor flat_slot = expert * capacity + slot;  // [P]
  const at::Tensor padded = at::zeros({kE * capacity, kD}, x.options())
                                .index_copy(0, flat_slot, x.index_select(0, token))
                                .view({kE, capacity, kD});
  const at::Tensor h = ApplyActivation(at::baddbmm(layer.b1.unsqueeze(1), padded, layer.w1), GELU);
  const at::Tensor y = at::baddbmm(layer.b2.unsqueeze(1), h, layer.w2)
                           .view({kE * capacity, kD})
                           .index_select(0, flat_slot);
  const at::Tensor weight = d.combine_weights.reshape({-1}).index_select(0, token * kE + expert);
  return at::zeros_like(x).index_add(0, token, y * weight.unsqueeze(1));
}

void BM_MoePadded(benchmark::State& state) {
  at::set_num_threads(state.range(0));
  torch::manual_seed(0);
  MoeLayer layer = MakeLayer();
  const at::Tensor hidden = torch::randn({kB, kT, kD}).requires_grad_(true);
  for (auto _ : state) {
    layer->zero_grad();
    RoutingDecision d = layer->router()->Route(hidden, RoutingContext());
    PaddedExperts(*layer, hidden, d).sum().backward();
  }
  state.SetItemsProcessed(state.iterations() * kB * kT);
}

// One optimizer-free training step (forward + backward) of the whole LM.
void BM_LmTrainStep(benchmark::State& state) {
  at::set_num_threads(state.range(0));
  torch::manual_seed(0);
  ExperimentSpec spec;
  spec.mutable_model()->set_name("moe_transformer_lm");
  TransformerLmOptions* o = spec.mutable_model()->mutable_transformer_lm();
  o->set_num_layers(4);
  o->set_model_dim(kD);
  o->set_num_heads(4);
  o->set_dense_hidden(kH);
  o->set_dropout(0.0f);
  spec.mutable_model()->mutable_moe()->set_num_experts(kE);
  spec.mutable_model()->mutable_moe()->set_expert_hidden(kH);
  *spec.mutable_router() = TopTwo();
  (void)ResolveTransformerLmSpec(spec.mutable_model());
  DatasetInfo info;
  info.vocab_size = 10000;
  info.sequence_length = kT;
  std::shared_ptr<Model> model = *CreateModel(spec, info);
  Batch batch;
  batch.inputs = torch::randint(10000, {kB, kT}, at::kLong);
  batch.targets = torch::randint(10000, {kB, kT}, at::kLong);
  for (auto _ : state) {
    model->zero_grad();
    ModelOutput out = model->Forward(batch, {});
    (out.loss + out.aux_loss).backward();
  }
  state.SetItemsProcessed(state.iterations() * kB * kT);
}

BENCHMARK(BM_MoeGrouped)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_MoeSliced)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_MoePadded)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_LmTrainStep)->Arg(2)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace moelab
