// Shared argument checks and constants for medgrid::pgd_step (CPU and CUDA kernels).
//
// The op computes one projected-gradient step (step + projection + clamp to [0, 1]):
//   linf: clamp(x + clamp(x_adv + s*alpha*sign(grad) - x, -eps, eps), 0, 1)
//   l2:   g = grad / ||grad||_2;            d = x_adv + s*alpha*g - x;
//         d *= min(1, eps / ||d||_2);       clamp(x + d, 0, 1)
// with s = -1 when targeted, norms per sample (over every dim but the first),
// sign(v) = (v > 0) - (v < 0), and float32 arithmetic for float16/bfloat16 inputs.
// The L2 direction has full length for every nonzero gradient: where the squares of grad may
// underflow or overflow (see l2_sums_trusted) it is computed exactly as u / ||u||_2 with
// u = grad / max|grad| (largest entry 1, so 1 <= ||u||^2 <= numel); a zero gradient takes no
// step (u = 0, divided by 1) and a NaN or infinite gradient entry makes the sample NaN.
// medgrid/ops.py holds the PyTorch reference both kernels are tested against.
#pragma once

// Light headers only (no ATen/ATen.h, no torch/extension.h): they keep each translation unit
// quick to compile.
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/ScalarType.h>
#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

#include <limits>
#include <string>

namespace medgrid {

// True when G = sum grad^2 over m elements, summed in acc_t, gives ||grad||_2 = sqrt(G) to
// acc_t precision: G is finite (no square overflowed, no NaN/inf entry) and at least
// m * min/epsilon (2^-103 per element in float32, 2^-970 in float64). Each acc_t operation whose
// result underflows errs by at most half the smallest subnormal (2^-150 in float32), so the
// underflow error of G stays below 2^-45 of G (2^-103 in float64). Otherwise (a zero gradient, one
// so small that its squares underflow, or a non-finite G) the kernels take the exact scheme.
// G may be held in a wider type sum_t (the CPU kernel adds its acc_t partial sums in double).
template <typename acc_t, typename sum_t>
C10_HOST_DEVICE inline bool l2_sums_trusted(sum_t G, int64_t m) {
  constexpr sum_t kMinPerElement = static_cast<sum_t>(std::numeric_limits<acc_t>::min() /
                                                      std::numeric_limits<acc_t>::epsilon());
  return G <= std::numeric_limits<sum_t>::max() && G >= kMinPerElement * static_cast<sum_t>(m);
}

enum class Norm { Linf, L2 };

// Validates the arguments of pgd_step and returns the parsed norm.
// Errors (as Python exceptions): ValueError for norm/eps/alpha, TypeError for dtypes,
// RuntimeError for shapes and devices.
inline Norm check_pgd_step_args(const at::Tensor& x_adv, const at::Tensor& grad,
                                const at::Tensor& x, c10::string_view norm, double eps,
                                double alpha) {
  const std::string norm_s(norm.data(), norm.size());
  TORCH_CHECK_VALUE(norm_s == "linf" || norm_s == "l2",
                    "medgrid::pgd_step: norm must be \"linf\" or \"l2\", got \"", norm_s, "\"");
  TORCH_CHECK_VALUE(eps >= 0.0, "medgrid::pgd_step: eps must be >= 0, got ", eps);
  TORCH_CHECK_VALUE(alpha >= 0.0, "medgrid::pgd_step: alpha must be >= 0, got ", alpha);
  TORCH_CHECK_TYPE(at::isFloatingType(x_adv.scalar_type()),
                   "medgrid::pgd_step: x_adv must have a floating dtype "
                   "(float32, float64, float16 or bfloat16), got ",
                   x_adv.scalar_type());
  TORCH_CHECK_TYPE(grad.scalar_type() == x_adv.scalar_type(),
                   "medgrid::pgd_step: dtype mismatch: x_adv is ", x_adv.scalar_type(),
                   " but grad is ", grad.scalar_type());
  TORCH_CHECK_TYPE(x.scalar_type() == x_adv.scalar_type(),
                   "medgrid::pgd_step: dtype mismatch: x_adv is ", x_adv.scalar_type(),
                   " but x is ", x.scalar_type());
  TORCH_CHECK(grad.device() == x_adv.device() && x.device() == x_adv.device(),
              "medgrid::pgd_step: device mismatch: x_adv on ", x_adv.device(), ", grad on ",
              grad.device(), ", x on ", x.device());
  TORCH_CHECK(grad.sizes() == x_adv.sizes(), "medgrid::pgd_step: shape mismatch: x_adv ",
              x_adv.sizes(), " vs grad ", grad.sizes());
  TORCH_CHECK(x.sizes() == x_adv.sizes(), "medgrid::pgd_step: shape mismatch: x_adv ",
              x_adv.sizes(), " vs x ", x.sizes());
  TORCH_CHECK(x_adv.dim() >= 1,
              "medgrid::pgd_step: inputs need a batch dimension (dim >= 1), got a 0-d tensor");
  return norm_s == "l2" ? Norm::L2 : Norm::Linf;
}

// The inputs of one step as both kernels consume them: contiguous copies, a contiguous output,
// and the flat sizes (n elements, batch samples of m elements each; batch = m = 0 when n = 0).
struct StepBuffers {
  at::Tensor x_adv, grad, x, out;
  int64_t n, batch, m;
};

// Call after check_pgd_step_args (and, on CUDA, under the device guard).
inline StepBuffers prepare_pgd_step(const at::Tensor& x_adv, const at::Tensor& grad,
                                    const at::Tensor& x) {
  StepBuffers b{x_adv.contiguous(), grad.contiguous(), x.contiguous(),
                at::empty(x_adv.sizes(), x_adv.options().memory_format(at::MemoryFormat::Contiguous)),
                0, 0, 0};
  b.n = b.x_adv.numel();
  if (b.n > 0) {
    b.batch = b.x_adv.size(0);
    b.m = b.n / b.batch;
  }
  return b;
}

// One dtype's view of a step for a kernel launcher: typed pointers into StepBuffers and the
// signed step (-alpha when targeted) and eps in the compute type.
template <typename scalar_t>
struct TypedStep {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* x_adv;
  const scalar_t* grad;
  const scalar_t* x;
  scalar_t* out;
  acc_t step, eps;
};

template <typename scalar_t>
inline TypedStep<scalar_t> typed_step(const StepBuffers& b, double alpha, double eps,
                                      bool targeted) {
  using acc_t = at::opmath_type<scalar_t>;
  return {b.x_adv.const_data_ptr<scalar_t>(), b.grad.const_data_ptr<scalar_t>(),
          b.x.const_data_ptr<scalar_t>(),     b.out.mutable_data_ptr<scalar_t>(),
          static_cast<acc_t>(targeted ? -alpha : alpha), static_cast<acc_t>(eps)};
}

}  // namespace medgrid
