#ifndef MOELAB_CORE_EXPERT_EXCHANGE_H_
#define MOELAB_CORE_EXPERT_EXCHANGE_H_

// How an MoE layer's tokens reach experts held by other ranks (expert
// parallelism). The layer's E experts are split evenly over the group's
// ranks, rank r holding experts [r * E / n, (r + 1) * E / n); after routing
// its own tokens, each rank sends every (token, expert) row to the rank of
// its expert, the experts run on what arrived, and the results travel back.
// models/moe_layer.h does the bookkeeping; an implementation only moves
// rows (core/distributed/ has the c10d one).
//
// Example: 2 ranks; rank 0 sends 3 rows to itself and 5 to rank 1, and
// learns it receives 2 rows from rank 1:
//
//   std::vector<int64_t> receive = exchange.ExchangeCounts({3, 5});  // {3, 2}
//   at::Tensor arrived = exchange.AllToAll(rows, {3, 5}, receive);   // [5, D]

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace moelab {

class ExpertExchange {
 public:
  virtual ~ExpertExchange() = default;
  // Ranks in the expert-parallel group, and this rank's place in it.
  virtual int size() const = 0;
  virtual int rank() const = 0;
  // Counts first: every rank passes size() * n numbers, n for each
  // destination rank, and receives size() * n, entry [s * n + i] being the
  // i-th number rank s addressed to this rank.
  virtual std::vector<int64_t> ExchangeCounts(const std::vector<int64_t>& send) = 0;
  // Rows [sum(send_rows), ...] in destination order -> the rows sent to this
  // rank [sum(receive_rows), ...] in source order. Not differentiable
  // (models/ wraps it in an autograd function whose backward is the reverse
  // exchange). Failures throw: it runs inside a forward or backward pass.
  virtual at::Tensor AllToAll(const at::Tensor& rows, const std::vector<int64_t>& send_rows,
                              const std::vector<int64_t>& receive_rows) = 0;
};

}  // namespace moelab

#endif  // MOELAB_CORE_EXPERT_EXCHANGE_H_
