// Timings of ScaledDotProductAttention, in each build this CPU runs, against
// the ATen sequence it replaces, at the benchmark model's sizes
// ([128, 128, 16] float, causal); three rounds.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/generated/variable_factories.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>

#include "models/attention_kernel.h"
#include "models/kernel_isa.h"

namespace {

double Seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::pair<at::Tensor, at::Tensor> Reference(const at::Tensor& q, const at::Tensor& k,
                                            const at::Tensor& v, double scale) {
  const int64_t n = q.size(0), t = q.size(1);
  const at::Tensor mask =
      at::full({t, t}, -std::numeric_limits<double>::infinity(), q.options()).triu(1);
  const at::Tensor probs =
      at::softmax(at::baddbmm(mask.expand({n, t, t}), q, k.transpose(1, 2), 1.0, scale), -1);
  return {at::bmm(probs, v), probs};
}

}  // namespace

int main(int argc, char** argv) {
  at::set_num_threads(argc > 1 ? std::atoi(argv[1]) : 2);
  const int64_t n = 128, t = 128, dh = 16;
  const double scale = 0.25;
  at::Tensor q = torch::randn({n, t, dh}).requires_grad_(true);
  at::Tensor k = torch::randn({n, t, dh}).requires_grad_(true);
  at::Tensor v = torch::randn({n, t, dh}).requires_grad_(true);
  const at::Tensor gc = torch::randn({n, t, dh});
  // ATen, then each build of the kernel this CPU runs, narrowest first.
  const int builds = static_cast<int>(moelab::KernelIsaInUse()) + 1;
  const char* kNames[] = {"kernel (portable)", "kernel (AVX2)", "kernel (AVX-512)"};
  for (int round = 0; round < 3; ++round) {
    for (int kernel = 0; kernel <= builds; ++kernel) {
      if (kernel > 0) {
        moelab::LimitKernelIsaForTesting(static_cast<moelab::KernelIsa>(kernel - 1));
      }
      double fwd = 0, bwd = 0;
      const int reps = 20;
      for (int r = 0; r < reps + 2; ++r) {
        const double t0 = Seconds();
        auto [c, p] = kernel ? moelab::ScaledDotProductAttention(q, k, v, scale, true)
                             : Reference(q, k, v, scale);
        const double t1 = Seconds();
        torch::autograd::grad({c}, {q, k, v}, {gc});
        const double t2 = Seconds();
        if (r >= 2) {
          fwd += t1 - t0;
          bwd += t2 - t1;
        }
      }
      std::printf("%s: forward %.2f ms, backward %.2f ms\n", kernel ? kNames[kernel - 1] : "aten",
                  1e3 * fwd / reps, 1e3 * bwd / reps);
    }
  }
  return 0;
}
