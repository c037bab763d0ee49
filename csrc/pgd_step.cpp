// CPU kernel of medgrid::pgd_step (see pgd_step.h for the formulas).
//
// Inputs are made contiguous; the output is a new contiguous tensor of x_adv's shape.
// float32/float64 compute in their own precision, float16/bfloat16 in float32
// (at::opmath_type). OpenMP with an explicit thread count taken from
// at::get_num_threads(), so torch.set_num_threads() governs the kernel too.
//   linf: one pass over memory, the flat index range split across threads.
//   l2:   per sample (threads split the batch): sum of grad^2, then sum of d^2 for the
//         unprojected d, then one write pass that recomputes d and scales it.
//         Sums of squares run in float (double for float64) within chunks of kChunk
//         elements, with the chunk sums added in double, so long samples lose no accuracy
//         while the inner loops stay vectorisable.
// The float32/float64 loops are built twice on x86-64 (GCC/Clang target_clones): for AVX2
// and for the baseline (SSE2), chosen when the library loads; AVX2 runs the L-inf step about
// 3x faster (NaN-preserving clamps need blends that SSE2 lacks). L-inf results are identical
// on both; L2's sums of squares use a different vector width, so they can differ in the last bits.
#include "pgd_step.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>

#if defined(__x86_64__) && defined(__GNUC__) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define MEDGRID_CPU_CLONES __attribute__((target_clones("avx2", "default")))
#endif
#endif
#ifndef MEDGRID_CPU_CLONES
#define MEDGRID_CPU_CLONES
#endif
#if defined(__GNUC__)
#define MEDGRID_ALWAYS_INLINE __attribute__((always_inline)) inline
#else
#define MEDGRID_ALWAYS_INLINE inline
#endif

namespace medgrid {
namespace {

// Below this many elements a single thread does the whole step (thread start-up costs more).
constexpr int64_t kMinElementsPerThread = 32768;
// Elements per partial sum of squares.
constexpr int64_t kChunk = 1024;

template <typename T>
MEDGRID_ALWAYS_INLINE T clamp_nan(T v, T lo, T hi) {
  // NaN propagates as in torch.clamp (both comparisons are false).
  return v < lo ? lo : (v > hi ? hi : v);
}

int threads_for(int64_t work_elements, int64_t max_parallel_items) {
  int n = std::max(1, at::get_num_threads());
  const int64_t by_size = std::max<int64_t>(1, work_elements / kMinElementsPerThread);
  n = static_cast<int>(std::min<int64_t>({static_cast<int64_t>(n), by_size, max_parallel_items}));
  return std::max(1, n);
}

template <typename scalar_t>
MEDGRID_ALWAYS_INLINE void linf_range_impl(const scalar_t* __restrict__ xa,
                                           const scalar_t* __restrict__ g,
                                           const scalar_t* __restrict__ x0,
                                           scalar_t* __restrict__ out, int64_t begin, int64_t end,
                                           at::opmath_type<scalar_t> step,
                                           at::opmath_type<scalar_t> eps) {
  using acc_t = at::opmath_type<scalar_t>;
  const acc_t zero(0), one(1);
#pragma omp simd
  for (int64_t i = begin; i < end; ++i) {
    const acc_t gv = static_cast<acc_t>(g[i]);
    const acc_t sgn = (gv > zero ? one : zero) - (gv < zero ? one : zero);  // (g>0)-(g<0)
    const acc_t xv = static_cast<acc_t>(x0[i]);
    const acc_t t = static_cast<acc_t>(xa[i]) + step * sgn;
    const acc_t d = clamp_nan(t - xv, -eps, eps);
    out[i] = static_cast<scalar_t>(clamp_nan(xv + d, zero, one));
  }
}

// Entry points: float32/float64 with ISA clones, the reduced types generic.
MEDGRID_CPU_CLONES void linf_range(const float* xa, const float* g, const float* x0, float* out,
                                   int64_t begin, int64_t end, float step, float eps) {
  linf_range_impl<float>(xa, g, x0, out, begin, end, step, eps);
}
MEDGRID_CPU_CLONES void linf_range(const double* xa, const double* g, const double* x0,
                                   double* out, int64_t begin, int64_t end, double step,
                                   double eps) {
  linf_range_impl<double>(xa, g, x0, out, begin, end, step, eps);
}
template <typename scalar_t>
void linf_range(const scalar_t* xa, const scalar_t* g, const scalar_t* x0, scalar_t* out,
                int64_t begin, int64_t end, at::opmath_type<scalar_t> step,
                at::opmath_type<scalar_t> eps) {
  linf_range_impl<scalar_t>(xa, g, x0, out, begin, end, step, eps);
}

template <typename scalar_t>
void linf_cpu(const scalar_t* xa, const scalar_t* g, const scalar_t* x0, scalar_t* out,
              int64_t n, at::opmath_type<scalar_t> step, at::opmath_type<scalar_t> eps) {
  const int nthreads = threads_for(n, n);
  if (nthreads == 1) {
    linf_range(xa, g, x0, out, 0, n, step, eps);
    return;
  }
  // Contiguous ranges per thread, boundaries on 64-element multiples (cache lines).
  const int64_t per = ((n + nthreads - 1) / nthreads + 63) / 64 * 64;
#ifdef _OPENMP
#pragma omp parallel for num_threads(nthreads) schedule(static, 1)
#endif
  for (int t = 0; t < nthreads; ++t) {
    const int64_t begin = std::min(n, static_cast<int64_t>(t) * per);
    const int64_t end = std::min(n, begin + per);
    linf_range(xa, g, x0, out, begin, end, step, eps);
  }
}

// sum_i f(i)^2 for i in [0, m), float partial sums per chunk, double total.
template <typename acc_t, typename F>
MEDGRID_ALWAYS_INLINE double sum_squares(int64_t m, const F& f) {
  double total = 0.0;
  for (int64_t c0 = 0; c0 < m; c0 += kChunk) {
    const int64_t c1 = std::min(m, c0 + kChunk);
    acc_t s(0);
#pragma omp simd reduction(+ : s)
    for (int64_t i = c0; i < c1; ++i) {
      const acc_t v = f(i);
      s += v * v;
    }
    total += static_cast<double>(s);
  }
  return total;
}

template <typename scalar_t>
MEDGRID_ALWAYS_INLINE void l2_sample_impl(const scalar_t* __restrict__ xa,
                                          const scalar_t* __restrict__ g,
                                          const scalar_t* __restrict__ x0,
                                          scalar_t* __restrict__ out, int64_t m,
                                          at::opmath_type<scalar_t> step,
                                          at::opmath_type<scalar_t> eps) {
  using acc_t = at::opmath_type<scalar_t>;
  const acc_t zero(0), one(1);
  // 1) ||grad||_2
  const acc_t gn = static_cast<acc_t>(
      std::sqrt(sum_squares<acc_t>(m, [&](int64_t i) { return static_cast<acc_t>(g[i]); })));
  const acc_t coef = step / (gn + static_cast<acc_t>(kGradNormTiny));
  // 2) ||d||_2 of the unprojected difference d = x_adv + s*alpha*g/||g|| - x
  const acc_t dn = static_cast<acc_t>(std::sqrt(sum_squares<acc_t>(m, [&](int64_t i) {
    return static_cast<acc_t>(xa[i]) + static_cast<acc_t>(g[i]) * coef - static_cast<acc_t>(x0[i]);
  })));
  // min(1, eps/||d||); ||d|| = 0 gives 1 (d is zero anyway), eps = 0 gives 0.
  const acc_t factor = dn > eps ? eps / dn : one;
  // 3) write
#pragma omp simd
  for (int64_t i = 0; i < m; ++i) {
    const acc_t xv = static_cast<acc_t>(x0[i]);
    const acc_t d = (static_cast<acc_t>(xa[i]) + static_cast<acc_t>(g[i]) * coef - xv) * factor;
    out[i] = static_cast<scalar_t>(clamp_nan(xv + d, zero, one));
  }
}

MEDGRID_CPU_CLONES void l2_sample(const float* xa, const float* g, const float* x0, float* out,
                                  int64_t m, float step, float eps) {
  l2_sample_impl<float>(xa, g, x0, out, m, step, eps);
}
MEDGRID_CPU_CLONES void l2_sample(const double* xa, const double* g, const double* x0,
                                  double* out, int64_t m, double step, double eps) {
  l2_sample_impl<double>(xa, g, x0, out, m, step, eps);
}
template <typename scalar_t>
void l2_sample(const scalar_t* xa, const scalar_t* g, const scalar_t* x0, scalar_t* out,
               int64_t m, at::opmath_type<scalar_t> step, at::opmath_type<scalar_t> eps) {
  l2_sample_impl<scalar_t>(xa, g, x0, out, m, step, eps);
}

template <typename scalar_t>
void l2_cpu(const scalar_t* xa, const scalar_t* g, const scalar_t* x0, scalar_t* out,
            int64_t batch, int64_t m, at::opmath_type<scalar_t> step,
            at::opmath_type<scalar_t> eps) {
  const int nthreads = threads_for(batch * m, batch);
#ifdef _OPENMP
#pragma omp parallel for num_threads(nthreads) schedule(static) if (nthreads > 1)
#endif
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t o = b * m;
    l2_sample(xa + o, g + o, x0 + o, out + o, m, step, eps);
  }
}

at::Tensor pgd_step_cpu(const at::Tensor& x_adv, const at::Tensor& grad, const at::Tensor& x,
                        c10::string_view norm, double eps, double alpha, bool targeted) {
  const Norm which = check_pgd_step_args(x_adv, grad, x, norm, eps, alpha);
  TORCH_INTERNAL_ASSERT(x_adv.device().is_cpu());
  const StepBuffers b = prepare_pgd_step(x_adv, grad, x);
  if (b.n == 0) return b.out;
  const double signed_alpha = targeted ? -alpha : alpha;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, b.x_adv.scalar_type(), "medgrid_pgd_step_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t step = static_cast<acc_t>(signed_alpha);
    const acc_t e = static_cast<acc_t>(eps);
    const scalar_t* pa = b.x_adv.const_data_ptr<scalar_t>();
    const scalar_t* pg = b.grad.const_data_ptr<scalar_t>();
    const scalar_t* px = b.x.const_data_ptr<scalar_t>();
    scalar_t* po = b.out.mutable_data_ptr<scalar_t>();
    if (which == Norm::Linf) {
      linf_cpu(pa, pg, px, po, b.n, step, e);
    } else {
      l2_cpu(pa, pg, px, po, b.batch, b.m, step, e);
    }
  });
  return b.out;
}

}  // namespace

TORCH_LIBRARY_IMPL(medgrid, CPU, m) {
  m.impl("pgd_step", &pgd_step_cpu);
}

}  // namespace medgrid
