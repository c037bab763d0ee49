// CPU kernel of medgrid::pgd_step (see pgd_step.h for the formulas).
//
// Inputs are made contiguous; the output is a new contiguous tensor of x_adv's shape.
// float32/float64 compute in their own precision, float16/bfloat16 in float32
// (at::opmath_type). OpenMP with an explicit thread count taken from
// at::get_num_threads(), so torch.set_num_threads() governs the kernel too.
//   linf: one pass over memory, the flat index range split across threads.
//   l2:   per sample (threads split the batch): one pass gathers A = sum (x_adv-x)^2,
//         B = sum (x_adv-x)*grad and G = sum grad^2, which give ||grad|| = sqrt(G) and
//         ||d||^2 = A + 2cB + c^2 G for the unprojected d = x_adv + c*grad - x; then one write
//         pass recomputes d (the sample is still in cache) and scales it. When d nearly cancels
//         (see kMinKeptShare) ||d|| is summed from d directly instead. Sums run in float lanes
//         (double for float64) over chunks with double totals, so long samples lose no accuracy.
//         When G cannot be trusted (l2_sums_trusted in pgd_step.h: squares that underflow or
//         overflow, a zero or non-finite gradient) the sample takes the exact scheme instead:
//         u = grad / max|grad|, c = step / ||u||, ||d|| summed directly (four passes, rare).
// The float32/float64 loops are built several times on x86-64 (target_clones): x86-64-v3
// (AVX2 + FMA; GCC >= 12), AVX2, and the baseline (SSE2), one chosen when the library loads;
// AVX2 runs the L-inf step about 2x faster than SSE2, and FMA takes about 10% off the L2 step.
// L-inf results are identical on all (its loop has no multiply that an FMA could contract);
// L2's sums use other vector widths and contractions, so they can differ in the last bits.
#include "../pgd_step.h"

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
#include <type_traits>

#if defined(__x86_64__) && defined(__GNUC__) && defined(__has_attribute)
#if __has_attribute(target_clones)
#if !defined(__clang__) && __GNUC__ >= 12
// x86-64-v3 adds FMA to AVX2 (GCC 12 dispatches on it by feature, so AMD and Intel alike).
#define MEDGRID_CPU_CLONES \
  __attribute__((target_clones("arch=x86-64-v3", "avx2", "default")))
#else
#define MEDGRID_CPU_CLONES __attribute__((target_clones("avx2", "default")))
#endif
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
// Elements per float partial sum before it is added to a double total.
constexpr int64_t kSumChunk = 1024;
// Independent partial sums per L2 reduction: enough vector accumulators that the loop is bound
// by loads and arithmetic rather than by the latency of one accumulator chain.
constexpr int kLanes = 32;

template <typename T>
MEDGRID_ALWAYS_INLINE T clamp_nan(T v, T lo, T hi) {
  // NaN propagates as in torch.clamp (both comparisons are false). Written as max then min,
  // each in the (a < b ? a : b) form of the x86 min/max instructions, which return their
  // second operand (v) when it is NaN: two instructions instead of compares and blends.
  const T lower = lo > v ? lo : v;
  return hi < lower ? hi : lower;
}

// The constant v, hidden from the optimiser: GCC otherwise rewrites clamps against 0 and 1
// into compare/blend sequences, about three times the instructions of one max and one min.
template <typename T>
MEDGRID_ALWAYS_INLINE T opaque(T v) {
#if defined(__GNUC__) && defined(__x86_64__)
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) asm("" : "+x"(v));
#endif
  return v;
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
  const acc_t zero = opaque(acc_t(0)), one = opaque(acc_t(1));
#pragma omp simd
  for (int64_t i = begin; i < end; ++i) {
    const acc_t gv = static_cast<acc_t>(g[i]);
    // x_adv + step*sign(g) with sign = (g>0)-(g<0): adding step only where g > 0 and
    // subtracting it only where g < 0 gives the same values without a multiply.
    const acc_t up = gv > zero ? step : zero;
    const acc_t down = gv < zero ? step : zero;
    const acc_t xv = static_cast<acc_t>(x0[i]);
    const acc_t t = (static_cast<acc_t>(xa[i]) + up) - down;
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

// sum_i f(i)^2 for i in [0, m), float partial sums per chunk, double total (the direct ||d||
// of a cancelling L2 step: rare, so one accumulator chain is enough).
template <typename acc_t, typename F>
MEDGRID_ALWAYS_INLINE double sum_squares(int64_t m, const F& f) {
  double total = 0.0;
  for (int64_t c0 = 0; c0 < m; c0 += kSumChunk) {
    const int64_t c1 = std::min(m, c0 + kSumChunk);
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

// The three per-sample sums one pass gathers: with a = x_adv - x and g = grad,
// ||a + c*g||^2 = A + 2cB + c^2 G for any step coefficient c.
struct L2Sums {
  double A = 0.0, B = 0.0, G = 0.0;
};

// Sum of the kLanes lanes: folded to 8 with fixed indices (vector adds; the lanes can stay in
// registers), then the 8 added in double.
template <typename acc_t>
MEDGRID_ALWAYS_INLINE double sum_lanes(const acc_t* lanes) {
  static_assert(kLanes == 32, "sum_lanes folds 4 groups of 8 lanes");
  acc_t folded[8];
#pragma omp simd
  for (int j = 0; j < 8; ++j) {
    folded[j] = (lanes[j] + lanes[j + 8]) + (lanes[j + 16] + lanes[j + 24]);
  }
  double total = 0.0;
  for (int j = 0; j < 8; ++j) total += static_cast<double>(folded[j]);
  return total;
}

// A = sum a^2, B = sum a*g, G = sum g^2 in one pass over the three inputs. Each of kLanes
// float lanes sums at most kSumChunk / kLanes products before the lanes go into double
// totals, so the relative error stays near float precision for any sample size.
template <typename scalar_t>
MEDGRID_ALWAYS_INLINE L2Sums l2_sums(const scalar_t* __restrict__ xa,
                                     const scalar_t* __restrict__ g,
                                     const scalar_t* __restrict__ x0, int64_t m) {
  using acc_t = at::opmath_type<scalar_t>;
  L2Sums s;
  const int64_t vec_end = m / kLanes * kLanes;
  for (int64_t c0 = 0; c0 < vec_end; c0 += kSumChunk) {
    const int64_t c1 = std::min(vec_end, c0 + kSumChunk);
    acc_t sa[kLanes] = {}, sb[kLanes] = {}, sg[kLanes] = {};
    for (int64_t i = c0; i < c1; i += kLanes) {
#pragma omp simd
      for (int j = 0; j < kLanes; ++j) {
        const acc_t gv = static_cast<acc_t>(g[i + j]);
        const acc_t av = static_cast<acc_t>(xa[i + j]) - static_cast<acc_t>(x0[i + j]);
        sa[j] += av * av;
        sb[j] += av * gv;
        sg[j] += gv * gv;
      }
    }
    s.A += sum_lanes(sa);
    s.B += sum_lanes(sb);
    s.G += sum_lanes(sg);
  }
  for (int64_t i = vec_end; i < m; ++i) {  // the last m % kLanes elements
    const double gv = static_cast<double>(static_cast<acc_t>(g[i]));
    const double av = static_cast<double>(static_cast<acc_t>(xa[i]) - static_cast<acc_t>(x0[i]));
    s.A += av * av;
    s.B += av * gv;
    s.G += gv * gv;
  }
  return s;
}

// ||d|| from the sums is trusted while ||d||^2 keeps at least this share of A + 2|cB| + c^2 G
// (so their rounding error is amplified at most 4x). Below it (the step nearly cancels the
// perturbation, e.g. straight back to x) or when a sum is not finite, ||d|| is summed
// directly from d as the reference does. The share is at least (1-|k|)/(1+|k|) for the cosine
// k between the step c*grad and x_adv - x, so only steps against the perturbation (k < -0.6)
// fall back.
constexpr double kMinKeptShare = 0.25;

// max |grad| over a sample (for the exact scheme; a NaN entry may be skipped here, it makes
// ||u|| NaN anyway).
template <typename scalar_t>
MEDGRID_ALWAYS_INLINE at::opmath_type<scalar_t> max_abs(const scalar_t* __restrict__ g,
                                                       int64_t m) {
  using acc_t = at::opmath_type<scalar_t>;
  acc_t mx(0);
#pragma omp simd reduction(max : mx)
  for (int64_t i = 0; i < m; ++i) {
    const acc_t v = std::abs(static_cast<acc_t>(g[i]));
    mx = v > mx ? v : mx;
  }
  return mx;
}

// The unprojected d_i = x_adv_i + coef * g_i - x_i; with kDivide (the exact scheme) g_i is
// first divided by div = max|grad| (a division, not a multiplication by 1/div: 1/div overflows
// for a subnormal div).
template <bool kDivide, typename scalar_t>
MEDGRID_ALWAYS_INLINE at::opmath_type<scalar_t> l2_diff(const scalar_t* __restrict__ xa,
                                                      const scalar_t* __restrict__ g,
                                                      const scalar_t* __restrict__ x0, int64_t i,
                                                      at::opmath_type<scalar_t> coef,
                                                      at::opmath_type<scalar_t> div) {
  using acc_t = at::opmath_type<scalar_t>;
  acc_t gv = static_cast<acc_t>(g[i]);
  if constexpr (kDivide) gv = gv / div;
  return static_cast<acc_t>(xa[i]) + gv * coef - static_cast<acc_t>(x0[i]);
}

// out = clamp(x + d * factor, 0, 1) for the d of l2_diff.
template <bool kDivide, typename scalar_t>
MEDGRID_ALWAYS_INLINE void l2_write(const scalar_t* __restrict__ xa,
                                    const scalar_t* __restrict__ g,
                                    const scalar_t* __restrict__ x0, scalar_t* __restrict__ out,
                                    int64_t m, at::opmath_type<scalar_t> coef,
                                    at::opmath_type<scalar_t> div,
                                    at::opmath_type<scalar_t> factor) {
  using acc_t = at::opmath_type<scalar_t>;
  const acc_t zero = opaque(acc_t(0)), one = opaque(acc_t(1));
#pragma omp simd
  for (int64_t i = 0; i < m; ++i) {
    const acc_t d = l2_diff<kDivide>(xa, g, x0, i, coef, div) * factor;
    out[i] = static_cast<scalar_t>(clamp_nan(static_cast<acc_t>(x0[i]) + d, zero, one));
  }
}

template <typename scalar_t>
MEDGRID_ALWAYS_INLINE void l2_sample_impl(const scalar_t* __restrict__ xa,
                                          const scalar_t* __restrict__ g,
                                          const scalar_t* __restrict__ x0,
                                          scalar_t* __restrict__ out, int64_t m,
                                          at::opmath_type<scalar_t> step,
                                          at::opmath_type<scalar_t> eps) {
  using acc_t = at::opmath_type<scalar_t>;
  const acc_t zero = opaque(acc_t(0)), one = opaque(acc_t(1));
  // 1) one pass: A, B, G
  const L2Sums s = l2_sums(xa, g, x0, m);
  acc_t coef, dn;
  acc_t div = one;  // max|grad| in the exact scheme
  const bool exact = !l2_sums_trusted<acc_t>(s.G, m);
  if (!exact) {
    // ||grad||_2 = sqrt(G) > 0, and ||d||_2 of the unprojected d = x_adv + s*alpha*g/||g|| - x
    coef = step / static_cast<acc_t>(std::sqrt(s.G));
    const double c = static_cast<double>(coef);
    const double dn2 = s.A + 2.0 * c * s.B + c * c * s.G;
    const double kept = s.A + 2.0 * std::abs(c * s.B) + c * c * s.G;  // c < 0 when targeted
    if (dn2 >= kMinKeptShare * kept && std::isfinite(kept)) {
      dn = static_cast<acc_t>(std::sqrt(dn2));
    } else {
      dn = static_cast<acc_t>(std::sqrt(sum_squares<acc_t>(
          m, [&](int64_t i) { return l2_diff<false>(xa, g, x0, i, coef, div); })));
    }
  } else {
    // The exact scheme: u = grad / max|grad| (largest entry 1: no square underflows or
    // overflows), coef = step / ||u||; a zero gradient divides by 1 and takes no step.
    const acc_t mx = max_abs(g, m);
    div = mx == zero ? one : mx;
    const acc_t un = static_cast<acc_t>(std::sqrt(
        sum_squares<acc_t>(m, [&](int64_t i) { return static_cast<acc_t>(g[i]) / div; })));
    coef = step / (un == zero ? one : un);
    dn = static_cast<acc_t>(std::sqrt(sum_squares<acc_t>(
        m, [&](int64_t i) { return l2_diff<true>(xa, g, x0, i, coef, div); })));
  }
  // min(1, eps/||d||); ||d|| = 0 gives 1 (d is zero anyway), eps = 0 gives 0.
  const acc_t factor = dn > eps ? eps / dn : one;
  // 2) write
  if (!exact) {
    l2_write<false>(xa, g, x0, out, m, coef, div, factor);
  } else {
    l2_write<true>(xa, g, x0, out, m, coef, div, factor);
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

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, b.x_adv.scalar_type(), "medgrid_pgd_step_cpu", [&] {
    const auto t = typed_step<scalar_t>(b, alpha, eps, targeted);
    if (which == Norm::Linf) {
      linf_cpu(t.x_adv, t.grad, t.x, t.out, b.n, t.step, t.eps);
    } else {
      l2_cpu(t.x_adv, t.grad, t.x, t.out, b.batch, b.m, t.step, t.eps);
    }
  });
  return b.out;
}

}  // namespace

TORCH_LIBRARY_IMPL(medgrid, CPU, m) {
  m.impl("pgd_step", &pgd_step_cpu);
}

}  // namespace medgrid
