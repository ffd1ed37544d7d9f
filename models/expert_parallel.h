#ifndef MOELAB_MODELS_EXPERT_PARALLEL_H_
#define MOELAB_MODELS_EXPERT_PARALLEL_H_

// The experts' FFNs when the experts are split over ranks (expert
// parallelism, core/expert_exchange.h): the rows of x_sorted travel to the
// ranks holding their experts, run through those ranks' experts, and come
// back to x_sorted's order. Each direction is one all-to-all (the counts
// are exchanged first, so every rank knows what it receives); the backward
// pass runs the same exchanges in reverse, so each local expert's weight
// gradient collects the rows of every rank.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "core/expert_exchange.h"
#include "proto/experiment.pb.h"

namespace moelab {

// x_sorted: [P, D] this rank's token rows grouped by global expert, in
// expert order; group_sizes: E entries (the whole layer's experts, E a
// multiple of exchange.size()). w1: [E/n, D, H], b1: [E/n, H], w2:
// [E/n, H, D], b2: [E/n, D]: this rank's experts, those numbered
// [rank * E/n, (rank + 1) * E/n). Returns [P, D], row r the output of its
// expert, as GroupedExpertFfn on the whole layer would give.
at::Tensor ExpertParallelFfn(ExpertExchange& exchange, const at::Tensor& x_sorted,
                             const std::vector<int64_t>& group_sizes, const at::Tensor& w1,
                             const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& b2,
                             Activation activation);

// Rows exchanged as ExpertExchange::AllToAll does, differentiably: the
// gradient goes back by the reverse exchange.
at::Tensor ExchangeRows(ExpertExchange& exchange, const at::Tensor& rows,
                        const std::vector<int64_t>& send_rows,
                        const std::vector<int64_t>& receive_rows);

}  // namespace moelab

#endif  // MOELAB_MODELS_EXPERT_PARALLEL_H_
