#include "models/fused_kernels.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "models/kernel_isa.h"
#include "models/matmul.h"

namespace moelab {

// The builds of the kernels for other instruction sets: fused_kernels_avx2.cc
// (AVX2 + FMA) and fused_kernels_avx512.cc (AVX-512F).
#if defined(MOELAB_FUSED_HAVE_X86_BUILDS)
namespace fused_avx2 {
#include "models/fused_kernels_entry_points.inc"
}  // namespace fused_avx2
namespace fused_avx512 {
#include "models/fused_kernels_entry_points.inc"
}  // namespace fused_avx512
#endif

// The portable build (SSE2 on x86-64).
#define MOELAB_FUSED_ISA fused_baseline
#define MOELAB_KERNEL_VECTOR_BYTES 32
#include "models/fused_kernels_impl.inc"
#undef MOELAB_KERNEL_VECTOR_BYTES
#undef MOELAB_FUSED_ISA

namespace {

// Calls the entry point `name` of the build in use with the given arguments.
#if defined(MOELAB_FUSED_HAVE_X86_BUILDS)
#define MOELAB_FUSED_CALL(name, ...)                                        \
  (KernelIsaInUse() == KernelIsa::kAvx512 ? fused_avx512::name(__VA_ARGS__) \
   : KernelIsaInUse() == KernelIsa::kAvx2 ? fused_avx2::name(__VA_ARGS__)   \
                                          : fused_baseline::name(__VA_ARGS__))
#else
#define MOELAB_FUSED_CALL(name, ...) fused_baseline::name(__VA_ARGS__)
#endif

// Elements per parallel chunk of the pointwise kernels (ATen's grain).
constexpr int64_t kGrain = 1 << 15;

uint16_t* Bf16Data(at::Tensor& t) {
  return reinterpret_cast<uint16_t*>(t.data_ptr<at::BFloat16>());
}

void CheckFloatContiguous(const at::Tensor& t, const char* what) {
  TORCH_CHECK(t.scalar_type() == at::kFloat && t.is_contiguous(), what,
              " must be a contiguous float tensor, got ", t.scalar_type(),
              t.is_contiguous() ? "" : " (not contiguous)");
}

}  // namespace

at::Tensor GeluOperand(const at::Tensor& pre, Precision precision) {
  CheckFloatContiguous(pre, "GeluOperand: pre");
  const float* x = pre.data_ptr<float>();
  const at::ScalarType type = OperandType(precision);
  at::Tensor activation = at::empty(pre.sizes(), pre.options().dtype(type));
  if (type == at::kBFloat16) {
    uint16_t* out = Bf16Data(activation);
    at::parallel_for(0, pre.numel(), kGrain, [=](int64_t begin, int64_t end) {
      MOELAB_FUSED_CALL(GeluForward, x + begin, out + begin, end - begin);
    });
  } else {
    float* out = activation.data_ptr<float>();
    const bool round_to_bf16 = precision == BF16;
    at::parallel_for(0, pre.numel(), kGrain, [=](int64_t begin, int64_t end) {
      MOELAB_FUSED_CALL(GeluForward, x + begin, out + begin, round_to_bf16, end - begin);
    });
  }
  return activation;
}

at::Tensor GeluBackwardInPlace(at::Tensor& grad, const at::Tensor& pre, Precision precision) {
  CheckFloatContiguous(grad, "GeluBackwardInPlace: grad");
  CheckFloatContiguous(pre, "GeluBackwardInPlace: pre");
  TORCH_CHECK(grad.sizes() == pre.sizes(), "GeluBackwardInPlace: grad ", grad.sizes(), " and pre ",
              pre.sizes(), " differ in size");
  float* g = grad.data_ptr<float>();
  const float* x = pre.data_ptr<float>();
  at::Tensor operand;
  uint16_t* bf16 = nullptr;
  if (OperandType(precision) == at::kBFloat16) {
    operand = at::empty(grad.sizes(), grad.options().dtype(at::kBFloat16));
    bf16 = Bf16Data(operand);
  }
  at::parallel_for(0, grad.numel(), kGrain, [=](int64_t begin, int64_t end) {
    MOELAB_FUSED_CALL(GeluBackward, g + begin, x + begin, bf16 == nullptr ? nullptr : bf16 + begin,
                      end - begin);
  });
  return operand.defined() ? operand : grad;
}

double SoftmaxCrossEntropySum(at::Tensor& logits, const at::Tensor& targets, at::Tensor* grad,
                              bool round_to_bf16) {
  CheckFloatContiguous(logits, "SoftmaxCrossEntropySum: logits");
  TORCH_CHECK(logits.dim() == 2 && logits.size(1) > 0,
              "SoftmaxCrossEntropySum: logits must be "
              "[n, V] with V > 0, got ",
              logits.sizes());
  const int64_t rows = logits.size(0), vocab = logits.size(1);
  TORCH_CHECK(targets.scalar_type() == at::kLong && targets.dim() == 1 && targets.size(0) == rows,
              "SoftmaxCrossEntropySum: targets must be int64 [", rows, "], got ",
              targets.scalar_type(), " ", targets.sizes());
  float* grad_fp32 = nullptr;
  uint16_t* grad_bf16 = nullptr;
  if (grad != nullptr) {
    TORCH_CHECK(grad->sizes() == logits.sizes() && grad->is_contiguous() &&
                    (grad->scalar_type() == at::kFloat || grad->scalar_type() == at::kBFloat16),
                "SoftmaxCrossEntropySum: grad must be a contiguous float or bfloat16 ",
                logits.sizes(), ", got ", grad->scalar_type(), " ", grad->sizes());
    if (grad->scalar_type() == at::kFloat) {
      grad_fp32 = grad->data_ptr<float>();
    } else {
      grad_bf16 = Bf16Data(*grad);
    }
  }
  const at::Tensor index = targets.contiguous();
  const int64_t* target = index.data_ptr<int64_t>();
  float* z = logits.data_ptr<float>();
  std::vector<double> row_loss(rows);
  std::atomic<int64_t> bad_target{-1};
  // A row is ~V floats of work; chunks of 4 rows keep both threads busy
  // even on small blocks.
  at::parallel_for(0, rows, 4, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      if (target[r] < 0 || target[r] >= vocab) {
        bad_target.store(r);
        continue;
      }
      row_loss[r] =
          MOELAB_FUSED_CALL(SoftmaxCrossEntropyRow, z + r * vocab, vocab, target[r],
                            grad_fp32 == nullptr ? nullptr : grad_fp32 + r * vocab,
                            grad_bf16 == nullptr ? nullptr : grad_bf16 + r * vocab, round_to_bf16);
    }
  });
  const int64_t bad = bad_target.load();
  TORCH_CHECK(bad < 0, "SoftmaxCrossEntropySum: target ", bad < 0 ? 0 : target[bad], " of row ",
              bad, " is outside [0, ", vocab, ")");
  double sum = 0;
  for (const double loss : row_loss) sum += loss;
  return sum;
}

}  // namespace moelab
