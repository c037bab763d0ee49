// CUDA kernels of medgrid::pgd_step (see pgd_step.h for the formulas).
//
// linf: grid-stride elementwise kernel, 16-byte vector loads/stores when every pointer is
//       16-byte aligned (else one element per access).
// l2:   one block per sample: block reduction of sum(grad^2), block reduction of sum(d^2)
//       for the unprojected d, then one write pass that recomputes d and scales it. When the
//       sum of squares cannot be trusted (l2_sums_trusted in pgd_step.h: squares that underflow
//       or overflow, a zero or non-finite gradient) the block takes the exact scheme: block
//       reductions of max|grad| and of sum(u^2) for u = grad / max|grad|, then the same two
//       passes with u in place of grad.
// float16/bfloat16 load and store in their own type and compute in float32
// (at::opmath_type); float32 and float64 compute in their own precision.
// Kernels are launched on the current stream (at::cuda::getCurrentCUDAStream()).
#include "../pgd_step.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>  // not ATen/cuda/CUDAContext.h: it drags in cuBLAS/cuSPARSE headers
#include <torch/library.h>

#include <cuda.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace medgrid {
namespace {

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

template <typename T>
__device__ __forceinline__ T clamp_nan(T v, T lo, T hi) {
  return v < lo ? lo : (v > hi ? hi : v);  // NaN propagates, as in torch.clamp
}

template <typename acc_t>
__device__ __forceinline__ acc_t linf_value(acc_t xa, acc_t g, acc_t x0, acc_t step, acc_t eps) {
  const acc_t zero(0), one(1);
  const acc_t sgn = static_cast<acc_t>(static_cast<int>(g > zero) - static_cast<int>(g < zero));
  const acc_t d = clamp_nan((xa + step * sgn) - x0, -eps, eps);
  return clamp_nan(x0 + d, zero, one);
}

template <typename scalar_t, int VEC>
__global__ void linf_kernel(const scalar_t* __restrict__ xa, const scalar_t* __restrict__ g,
                            const scalar_t* __restrict__ x0, scalar_t* __restrict__ out,
                            int64_t n, at::opmath_type<scalar_t> step,
                            at::opmath_type<scalar_t> eps) {
  using acc_t = at::opmath_type<scalar_t>;
  using P = Pack<scalar_t, VEC>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t nvec = n / VEC;
  for (int64_t i = tid; i < nvec; i += stride) {
    const P a = reinterpret_cast<const P*>(xa)[i];
    const P b = reinterpret_cast<const P*>(g)[i];
    const P c = reinterpret_cast<const P*>(x0)[i];
    P o;
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      o.v[k] = static_cast<scalar_t>(linf_value<acc_t>(static_cast<acc_t>(a.v[k]),
                                                       static_cast<acc_t>(b.v[k]),
                                                       static_cast<acc_t>(c.v[k]), step, eps));
    }
    reinterpret_cast<P*>(out)[i] = o;
  }
  for (int64_t i = nvec * VEC + tid; i < n; i += stride) {  // tail (< VEC elements)
    out[i] = static_cast<scalar_t>(linf_value<acc_t>(static_cast<acc_t>(xa[i]),
                                                     static_cast<acc_t>(g[i]),
                                                     static_cast<acc_t>(x0[i]), step, eps));
  }
}

struct SumOp {
  template <typename T>
  __device__ __forceinline__ T operator()(T a, T b) const { return a + b; }
};
struct MaxOp {  // of values >= 0 (a NaN may be dropped: it makes the sum of squares NaN anyway)
  template <typename T>
  __device__ __forceinline__ T operator()(T a, T b) const { return b > a ? b : a; }
};

// Reduction over the block (sum, or max of values >= 0: T(0) is the identity of both); every
// thread gets the result. Call from every thread of the block. `shared` holds >= 32 values.
template <typename T, typename Op>
__device__ __forceinline__ T block_reduce(T v, T* shared, Op op) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int nwarps = (blockDim.x + 31) >> 5;
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v = op(v, __shfl_down_sync(0xffffffffu, v, off));
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < nwarps ? shared[lane] : T(0);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v = op(v, __shfl_down_sync(0xffffffffu, v, off));
    if (lane == 0) shared[0] = v;
  }
  __syncthreads();
  const T total = shared[0];
  __syncthreads();  // shared may be reused by the next call
  return total;
}

// The unprojected d = x_adv + coef * g - x; with kDivide (the exact scheme) g is first divided
// by div = max|grad| (a division: 1/div overflows for a subnormal div).
template <bool kDivide, typename acc_t>
__device__ __forceinline__ acc_t l2_diff(acc_t xa, acc_t g, acc_t x0, acc_t coef, acc_t div) {
  if constexpr (kDivide) g = g / div;
  return xa + g * coef - x0;
}

// Passes 2 and 3 of the L2 kernel for one sample: ||d||_2 of the unprojected d, then the write
// of clamp(x + d * min(1, eps/||d||), 0, 1).
template <bool kDivide, typename scalar_t, int VEC>
__device__ __forceinline__ void l2_project_write(
    const Pack<scalar_t, VEC>* __restrict__ pa, const Pack<scalar_t, VEC>* __restrict__ pg,
    const Pack<scalar_t, VEC>* __restrict__ px, Pack<scalar_t, VEC>* __restrict__ po, int64_t mv,
    at::opmath_type<scalar_t> coef, at::opmath_type<scalar_t> div, at::opmath_type<scalar_t> eps,
    at::opmath_type<scalar_t>* shared) {
  using acc_t = at::opmath_type<scalar_t>;
  using P = Pack<scalar_t, VEC>;
  const acc_t zero(0), one(1);
  acc_t s(0);
  for (int64_t i = threadIdx.x; i < mv; i += blockDim.x) {
    const P a = pa[i], b = pg[i], c = px[i];
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      const acc_t d = l2_diff<kDivide>(static_cast<acc_t>(a.v[k]), static_cast<acc_t>(b.v[k]),
                                       static_cast<acc_t>(c.v[k]), coef, div);
      s += d * d;
    }
  }
  const acc_t dn = sqrt(block_reduce(s, shared, SumOp()));
  const acc_t factor = dn > eps ? eps / dn : one;  // min(1, eps/||d||), ||d|| = 0 -> 1

  for (int64_t i = threadIdx.x; i < mv; i += blockDim.x) {
    const P a = pa[i], b = pg[i], c = px[i];
    P o;
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      const acc_t xv = static_cast<acc_t>(c.v[k]);
      const acc_t d = l2_diff<kDivide>(static_cast<acc_t>(a.v[k]), static_cast<acc_t>(b.v[k]),
                                       xv, coef, div) * factor;
      o.v[k] = static_cast<scalar_t>(clamp_nan(xv + d, zero, one));
    }
    po[i] = o;
  }
}

// One block per sample; m elements per sample, processed VEC at a time (m % VEC == 0).
template <typename scalar_t, int VEC>
__global__ void l2_kernel(const scalar_t* __restrict__ xa, const scalar_t* __restrict__ g,
                          const scalar_t* __restrict__ x0, scalar_t* __restrict__ out,
                          int64_t m, at::opmath_type<scalar_t> step,
                          at::opmath_type<scalar_t> eps) {
  using acc_t = at::opmath_type<scalar_t>;
  using P = Pack<scalar_t, VEC>;
  __shared__ acc_t shared[32];
  const int64_t base = static_cast<int64_t>(blockIdx.x) * m;
  const P* pa = reinterpret_cast<const P*>(xa + base);
  const P* pg = reinterpret_cast<const P*>(g + base);
  const P* px = reinterpret_cast<const P*>(x0 + base);
  P* po = reinterpret_cast<P*>(out + base);
  const int64_t mv = m / VEC;
  const acc_t zero(0), one(1);

  // 1) sum(grad^2); ||grad||_2 = its square root when l2_sums_trusted
  acc_t s(0);
  for (int64_t i = threadIdx.x; i < mv; i += blockDim.x) {
    const P b = pg[i];
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      const acc_t v = static_cast<acc_t>(b.v[k]);
      s += v * v;
    }
  }
  const acc_t G = block_reduce(s, shared, SumOp());
  // G is the same in every thread, so the whole block takes the same branch.
  if (l2_sums_trusted<acc_t>(G, m)) {
    // 2), 3) with coef = step / ||grad||
    l2_project_write<false, scalar_t, VEC>(pa, pg, px, po, mv, step / sqrt(G), one, eps, shared);
    return;
  }
  // The exact scheme: u = grad / max|grad| (largest entry 1: no square underflows or overflows),
  // coef = step / ||u||; a zero gradient divides by 1 and takes no step.
  acc_t mx(0);
  for (int64_t i = threadIdx.x; i < mv; i += blockDim.x) {
    const P b = pg[i];
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      const acc_t v = static_cast<acc_t>(b.v[k]);
      mx = MaxOp()(mx, v < zero ? -v : v);
    }
  }
  mx = block_reduce(mx, shared, MaxOp());
  const acc_t div = mx == zero ? one : mx;
  s = acc_t(0);
  for (int64_t i = threadIdx.x; i < mv; i += blockDim.x) {
    const P b = pg[i];
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      const acc_t u = static_cast<acc_t>(b.v[k]) / div;
      s += u * u;
    }
  }
  const acc_t un = sqrt(block_reduce(s, shared, SumOp()));
  l2_project_write<true, scalar_t, VEC>(pa, pg, px, po, mv, step / (un == zero ? one : un), div,
                                        eps, shared);
}

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

int multiprocessor_count() {
  int device = 0, sms = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  return std::max(1, sms);
}

template <typename scalar_t>
void launch_linf(const scalar_t* xa, const scalar_t* g, const scalar_t* x0, scalar_t* out,
                 int64_t n, at::opmath_type<scalar_t> step, at::opmath_type<scalar_t> eps,
                 cudaStream_t stream) {
  constexpr int kVec = 16 / sizeof(scalar_t);
  constexpr int kThreads = 256;
  const bool vec = aligned16(xa) && aligned16(g) && aligned16(x0) && aligned16(out);
  const int64_t items = vec ? (n + kVec - 1) / kVec : n;
  const int sms = multiprocessor_count();
  const int64_t max_blocks = static_cast<int64_t>(sms) * 8;  // 8 x 256 threads fill an SM
  const int blocks = static_cast<int>(std::max<int64_t>(1, std::min(max_blocks, (items + kThreads - 1) / kThreads)));
  if (vec) {
    linf_kernel<scalar_t, kVec><<<blocks, kThreads, 0, stream>>>(xa, g, x0, out, n, step, eps);
  } else {
    linf_kernel<scalar_t, 1><<<blocks, kThreads, 0, stream>>>(xa, g, x0, out, n, step, eps);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t>
void launch_l2(const scalar_t* xa, const scalar_t* g, const scalar_t* x0, scalar_t* out,
               int64_t batch, int64_t m, at::opmath_type<scalar_t> step,
               at::opmath_type<scalar_t> eps, cudaStream_t stream) {
  constexpr int kVec = 16 / sizeof(scalar_t);
  TORCH_CHECK(batch <= 2147483647LL, "medgrid::pgd_step: batch too large for one grid");
  const bool vec = m % kVec == 0 && aligned16(xa) && aligned16(g) && aligned16(x0) && aligned16(out);
  const int64_t items = vec ? m / kVec : m;
  const int threads = items >= 8192 ? 512 : (items >= 1024 ? 256 : 128);
  const dim3 grid(static_cast<unsigned int>(batch));
  if (vec) {
    l2_kernel<scalar_t, kVec><<<grid, threads, 0, stream>>>(xa, g, x0, out, m, step, eps);
  } else {
    l2_kernel<scalar_t, 1><<<grid, threads, 0, stream>>>(xa, g, x0, out, m, step, eps);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor pgd_step_cuda(const at::Tensor& x_adv, const at::Tensor& grad, const at::Tensor& x,
                         c10::string_view norm, double eps, double alpha, bool targeted) {
  const Norm which = check_pgd_step_args(x_adv, grad, x, norm, eps, alpha);
  TORCH_INTERNAL_ASSERT(x_adv.device().is_cuda());
  const c10::cuda::CUDAGuard device_guard(x_adv.device());
  const StepBuffers b = prepare_pgd_step(x_adv, grad, x);
  if (b.n == 0) return b.out;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();  // = at::cuda::getCurrentCUDAStream()

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, b.x_adv.scalar_type(), "medgrid_pgd_step_cuda", [&] {
    const auto t = typed_step<scalar_t>(b, alpha, eps, targeted);
    if (which == Norm::Linf) {
      launch_linf(t.x_adv, t.grad, t.x, t.out, b.n, t.step, t.eps, stream);
    } else {
      launch_l2(t.x_adv, t.grad, t.x, t.out, b.batch, b.m, t.step, t.eps, stream);
    }
  });
  return b.out;
}

}  // namespace

TORCH_LIBRARY_IMPL(medgrid, CUDA, m) {
  m.impl("pgd_step", &pgd_step_cuda);
}

}  // namespace medgrid
