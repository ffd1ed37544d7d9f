#ifndef MOELAB_MODELS_GROUPED_FFN_H_
#define MOELAB_MODELS_GROUPED_FFN_H_

// The experts' FFNs applied to token rows grouped by expert, with a
// hand-written backward.
//
// Why not plain autograd over `w1[e]`: slicing one expert out of a batched
// parameter inside autograd makes each slice's backward allocate a
// zero-filled gradient of the whole [E, D, H] parameter and add it up, E
// times per layer per step (the `fill_`/`copy_` share in DESIGN.md's
// profile). Here every expert's gradient is written by one matrix multiply
// straight into its slice of a single [E, D, H] buffer, and the activation
// runs once over all rows.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "proto/experiment.pb.h"

namespace moelab {

// x_sorted: [P, D] token rows, grouped by expert in expert order: the first
// group_sizes[0] rows go to expert 0, the next group_sizes[1] to expert 1 ...
// (group_sizes has E entries summing to P; empty groups are fine).
// w1: [E, D, H], b1: [E, H], w2: [E, H, D], b2: [E, D].
// Returns [P, D]: row r is act(x_r w1[e] + b1[e]) w2[e] + b2[e] for its e.
// Differentiable (once) with respect to x_sorted, w1, b1, w2 and b2. All
// float; the products take operands in the precision in force
// (core/precision.h, models/matmul.h) and every result and gradient is fp32.
at::Tensor GroupedExpertFfn(const at::Tensor& x_sorted, const std::vector<int64_t>& group_sizes,
                            const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2,
                            const at::Tensor& b2, Activation activation);

}  // namespace moelab

#endif  // MOELAB_MODELS_GROUPED_FFN_H_
