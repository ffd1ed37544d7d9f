#include "models/matmul.h"

#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <c10/util/BFloat16.h>
#include <oneapi/dnnl/dnnl.h>

#include <atomic>
#include <bit>
#include <cstdint>

#include "absl/status/statusor.h"
#include "core/cpu_info.h"

// oneDNN exports its bf16 GEMM (used by its own tests and benchdnn) without
// declaring it in the public headers; the declaration is the one in its
// src/cpu/gemm/gemm.hpp, stable through the 2.x and 3.x series.
extern "C" dnnl_status_t DNNL_API dnnl_gemm_bf16bf16f32(char transa, char transb, dnnl_dim_t M,
                                                        dnnl_dim_t N, dnnl_dim_t K, float alpha,
                                                        const c10::BFloat16* A, dnnl_dim_t lda,
                                                        const c10::BFloat16* B, dnnl_dim_t ldb,
                                                        float beta, float* C, dnnl_dim_t ldc);

namespace moelab {
namespace {

// A row-major view of a 2-D operand for a BLAS-style call: 'N' with its row
// stride, or 'T' (it is the transpose of a row-major matrix) with its column
// stride. Other layouts are copied.
struct GemmOperand {
  at::Tensor storage;
  char transpose = 'N';
  int64_t leading_dimension = 0;
};

GemmOperand AsGemmOperand(const at::Tensor& t) {
  const int64_t rows = t.size(0), cols = t.size(1);
  if (t.stride(1) == 1 && t.stride(0) >= std::max<int64_t>(cols, 1)) {
    return {t, 'N', t.stride(0)};
  }
  if (t.stride(0) == 1 && t.stride(1) >= std::max<int64_t>(rows, 1)) {
    return {t, 'T', t.stride(1)};
  }
  const at::Tensor copy = t.contiguous();
  return {copy, 'N', std::max<int64_t>(cols, 1)};
}

bool OneDnnBf16Works() {
  const c10::BFloat16 one(1.0f);
  float c = 0;
  return dnnl_gemm_bf16bf16f32('N', 'N', 1, 1, 1, 1.0f, &one, 1, &one, 1, 0.0f, &c, 1) ==
             dnnl_success &&
         c == 1.0f;
}

// out (+)= a b through ATen, in the operands' own type, for devices and
// machines oneDNN's GEMMs do not serve.
void AtenMatmulInto(at::Tensor& out, const at::Tensor& a, const at::Tensor& b, bool accumulate) {
  const at::Tensor product = at::mm(a, b).to(out.scalar_type());
  if (accumulate) {
    out.add_(product);
  } else {
    out.copy_(product);
  }
}

}  // namespace

bool HasOneDnnBf16Matmul() {
  static const bool works = OneDnnBf16Works();
  return works;
}

namespace {

Bf16Operands ChooseBf16Operands() {
  const absl::StatusOr<CpuInfo> cpu = ReadCpuInfo();
  return HasOneDnnBf16Matmul() && cpu.ok() && Bf16MatmulOutrunsFp32(*cpu)
             ? Bf16Operands::kBf16
             : Bf16Operands::kRoundedFp32;
}

std::atomic<Bf16Operands>& Bf16OperandsSetting() {
  static std::atomic<Bf16Operands> setting(ChooseBf16Operands());
  return setting;
}

}  // namespace

Bf16Operands CurrentBf16Operands() { return Bf16OperandsSetting().load(); }

void SetBf16Operands(Bf16Operands operands) { Bf16OperandsSetting().store(operands); }

const char* DescribeBf16Operands() {
  if (CurrentBf16Operands() == Bf16Operands::kBf16) {
    return "bf16 operands, oneDNN bf16 x bf16 -> fp32 GEMM";
  }
  return "bf16-rounded operands held in fp32, oneDNN fp32 sgemm (this processor's bf16 "
         "products are not faster)";
}

at::ScalarType OperandType(Precision precision) {
  return precision == BF16 && CurrentBf16Operands() == Bf16Operands::kBf16 ? at::kBFloat16
                                                                           : at::kFloat;
}

namespace {

// The fp32 bits of `bits`'s nearest bf16 (ties to even, as c10::BFloat16
// rounds). Branch-free, so that loops over it vectorise (-O3 in BUILD.bazel).
inline uint32_t RoundedToBf16(uint32_t bits) {
  const uint32_t nearest = (bits + 0x7fffu + ((bits >> 16) & 1u)) & 0xffff0000u;
  // NaN stays a quiet NaN (sign and high payload bits kept, where c10 returns
  // one canonical NaN) instead of rounding into infinity.
  const uint32_t quiet_nan = (bits | 0x00400000u) & 0xffff0000u;
  return (bits & 0x7fffffffu) > 0x7f800000u ? quiet_nan : nearest;
}

// `source` rounded to bf16 into `out`, kept in fp32: one pass instead of the
// two of .to(bf16).to(float). Both contiguous floats of one size.
void RoundToBf16InFp32(const at::Tensor& source, at::Tensor& out) {
  const float* in = source.data_ptr<float>();
  float* rounded = out.data_ptr<float>();
  at::parallel_for(0, source.numel(), 1 << 15, [=](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      rounded[i] = std::bit_cast<float>(RoundedToBf16(std::bit_cast<uint32_t>(in[i])));
    }
  });
}

// The same in place (one pointer, so that no aliasing check sends the loop
// down a scalar path).
void RoundToBf16InFp32InPlace(at::Tensor& t) {
  float* values = t.data_ptr<float>();
  at::parallel_for(0, t.numel(), 1 << 15, [=](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      values[i] = std::bit_cast<float>(RoundedToBf16(std::bit_cast<uint32_t>(values[i])));
    }
  });
}

}  // namespace

at::Tensor MatmulOperand(const at::Tensor& t, Precision precision) {
  if (t.scalar_type() != at::kFloat || precision != BF16) return t;
  if (CurrentBf16Operands() == Bf16Operands::kBf16) return t.to(at::kBFloat16);
  if (at::GradMode::is_enabled() && t.requires_grad()) {
    return t.to(at::kBFloat16).to(at::kFloat);  // differentiable, as casts are
  }
  const at::Tensor source = t.contiguous();
  at::Tensor rounded = at::empty_like(source);
  RoundToBf16InFp32(source, rounded);
  return rounded;
}

at::Tensor MatmulOperandInPlace(at::Tensor t, Precision precision) {
  if (t.scalar_type() != at::kFloat || precision != BF16 ||
      CurrentBf16Operands() == Bf16Operands::kBf16 || !t.is_contiguous() || t.requires_grad()) {
    return MatmulOperand(t, precision);
  }
  RoundToBf16InFp32InPlace(t);
  return t;
}

void MatmulInto(at::Tensor& out, const at::Tensor& a, const at::Tensor& b, bool accumulate) {
  TORCH_CHECK(a.dim() == 2 && b.dim() == 2 && out.dim() == 2 && a.size(1) == b.size(0) &&
                  out.size(0) == a.size(0) && out.size(1) == b.size(1),
              "MatmulInto: expected out [M, N] = a [M, K] b [K, N], got ", out.sizes(), " = ",
              a.sizes(), " x ", b.sizes());
  TORCH_CHECK(a.device() == b.device() && a.device() == out.device(),
              "MatmulInto: operands and out must be on one device");
  if (a.scalar_type() == at::kDouble && b.scalar_type() == at::kDouble &&
      out.scalar_type() == at::kDouble) {
    AtenMatmulInto(out, a, b, accumulate);
    return;
  }
  TORCH_CHECK(a.scalar_type() == b.scalar_type() &&
                  (a.scalar_type() == at::kFloat || a.scalar_type() == at::kBFloat16),
              "MatmulInto: operands must be both float, both bfloat16 or both double, got ",
              a.scalar_type(), " and ", b.scalar_type());
  TORCH_CHECK(out.scalar_type() == at::kFloat, "MatmulInto: out must be float, got ",
              out.scalar_type());
  const int64_t m = a.size(0), k = a.size(1), n = b.size(1);
  if (m == 0 || n == 0) return;
  if (k == 0) {
    if (!accumulate) out.zero_();
    return;
  }
  const bool bf16 = a.scalar_type() == at::kBFloat16;
  if (!a.device().is_cpu() || (bf16 && !HasOneDnnBf16Matmul())) {
    if (bf16 && a.device().is_cpu()) {
      AtenMatmulInto(out, a.to(at::kFloat), b.to(at::kFloat), accumulate);
    } else {
      AtenMatmulInto(out, a, b, accumulate);
    }
    return;
  }
  TORCH_CHECK(out.stride(1) == 1 && out.stride(0) >= n,
              "MatmulInto: out needs unit column stride, got strides ", out.strides());
  const GemmOperand lhs = AsGemmOperand(a), rhs = AsGemmOperand(b);
  const float beta = accumulate ? 1.0f : 0.0f;
  dnnl_status_t status;
  if (bf16) {
    status = dnnl_gemm_bf16bf16f32(lhs.transpose, rhs.transpose, m, n, k, 1.0f,
                                   lhs.storage.data_ptr<c10::BFloat16>(), lhs.leading_dimension,
                                   rhs.storage.data_ptr<c10::BFloat16>(), rhs.leading_dimension,
                                   beta, out.data_ptr<float>(), out.stride(0));
  } else {
    status = dnnl_sgemm(lhs.transpose, rhs.transpose, m, n, k, 1.0f, lhs.storage.data_ptr<float>(),
                        lhs.leading_dimension, rhs.storage.data_ptr<float>(), rhs.leading_dimension,
                        beta, out.data_ptr<float>(), out.stride(0));
  }
  TORCH_CHECK(status == dnnl_success, "MatmulInto: oneDNN GEMM failed with status ",
              static_cast<int>(status), " for [", m, ", ", k, "] x [", k, ", ", n, "]");
}

at::Tensor Matmul(const at::Tensor& a, const at::Tensor& b) {
  const at::ScalarType result_type = a.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor out = at::empty({a.size(0), b.size(1)}, a.options().dtype(result_type));
  MatmulInto(out, a, b);
  return out;
}

}  // namespace moelab
