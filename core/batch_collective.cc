#include "core/batch_collective.h"

#include <ATen/ATen.h>

namespace moelab {
namespace {

BatchCollective* g_collective = nullptr;

}  // namespace

BatchCollective* CurrentBatchCollective() { return g_collective; }

ScopedBatchCollective::ScopedBatchCollective(BatchCollective* collective)
    : previous_(g_collective) {
  g_collective = collective;
}

ScopedBatchCollective::~ScopedBatchCollective() { g_collective = previous_; }

namespace {

// gloo reduces and gathers fp32, fp64 and integer tensors, not bool or
// bf16: those travel as fp32 (exact for counts below 2^24).
at::Tensor Transportable(const at::Tensor& tensor) {
  const at::ScalarType type = tensor.scalar_type();
  const bool native =
      type == at::kFloat || type == at::kDouble || type == at::kLong || type == at::kInt;
  return (native ? tensor.detach() : tensor.detach().to(at::kFloat)).contiguous();
}

}  // namespace

at::Tensor SumOverBatchShards(const at::Tensor& tensor) {
  if (g_collective == nullptr || g_collective->shards() <= 1) return tensor.detach();
  at::Tensor sum = Transportable(tensor).clone();
  g_collective->SumInPlace(sum);
  return sum.to(tensor.scalar_type());
}

at::Tensor GatherBatchShards(const at::Tensor& tensor) {
  if (g_collective == nullptr || g_collective->shards() <= 1) return tensor.detach().unsqueeze(0);
  return g_collective->Gather(Transportable(tensor)).to(tensor.scalar_type());
}

int BatchShards() { return g_collective == nullptr ? 1 : g_collective->shards(); }

int BatchShardIndex() { return g_collective == nullptr ? 0 : g_collective->shard(); }

}  // namespace moelab
