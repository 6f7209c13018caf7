// CUDA kernels of easyhard::accumulate_stats.
//
// Kernel 1 (stats): one warp per row reads the row's logits once, coalesced (16-byte vector loads
// when the row is aligned), keeping an online softmax state (max, sum exp, sum exp^2), the first
// argmax and the largest other logit per lane in float32, then combines lanes with shuffles. Lane 0
// adds the row's statistics into the example's accumulators with atomics (duplicate indices give
// exact counts; float sums are exact up to the order of the additions) and marks the example's
// batch bits in `flags`.
// Kernel 2 (settle): one thread per row resolves each touched example's last-correct flag once
// (compare-and-swap elects one row per example) and counts forgetting events. It must run after
// every row of kernel 1 has set its batch bits, hence the second launch.
// Invalid labels or indices are never dereferenced: the row is skipped and recorded in `errors`
// (bit mask, smallest offending row), which the caller inspects without a device synchronisation.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cfloat>
#include <climits>

#include "../accumulate_stats.h"

namespace easyhard {
namespace {

constexpr int kWarp = 32;
constexpr int kRowsPerBlock = 8;  // 256 threads

// Running per-lane state of one row. The sums cover the other classes only (see finish_row).
struct Lane {
  float m = -INFINITY;  // max over every class
  float so1 = 0.f;      // sum over j != label of exp(x - m)
  float so2 = 0.f;      // sum over j != label of exp(2 (x - m))
  float best = -INFINITY;
  int64_t best_j = INT64_MAX;  // first index of `best`
  float other = -INFINITY;     // max over j != label
  bool finite = true;

  __device__ __forceinline__ void push(float x, int64_t j, int64_t label) {
    finite &= isfinite(x);
    if (x > m) {  // rescale to the new max (r = 0 while m is -inf)
      const float r = expf(m - x);
      so1 *= r;
      so2 *= r * r;
      m = x;
    }
    if (j != label) {
      const float e = expf(x - m);
      so1 += e;
      so2 += e * e;
      other = fmaxf(other, x);
    }
    // j increases within a lane, so strict > keeps the first maximum.
    if (x > best) {
      best = x;
      best_j = j;
    }
  }

  __device__ __forceinline__ void merge_from(int lane_mask) {
    const float om = __shfl_xor_sync(0xffffffffu, m, lane_mask);
    const float oso1 = __shfl_xor_sync(0xffffffffu, so1, lane_mask);
    const float oso2 = __shfl_xor_sync(0xffffffffu, so2, lane_mask);
    const float obest = __shfl_xor_sync(0xffffffffu, best, lane_mask);
    const int64_t obest_j = __shfl_xor_sync(0xffffffffu, best_j, lane_mask);
    const float oother = __shfl_xor_sync(0xffffffffu, other, lane_mask);
    const bool ofinite = __shfl_xor_sync(0xffffffffu, static_cast<int>(finite), lane_mask);
    const float nm = fmaxf(m, om);
    // A lane that saw no element has m == -inf and nothing to rescale (avoid -inf - -inf).
    const float ra = m == -INFINITY ? 0.f : expf(m - nm);
    const float rb = om == -INFINITY ? 0.f : expf(om - nm);
    so1 = so1 * ra + oso1 * rb;
    so2 = so2 * ra * ra + oso2 * rb * rb;
    m = nm;
    if (obest > best || (obest == best && obest_j < best_j)) {
      best = obest;
      best_j = obest_j;
    }
    other = fmaxf(other, oother);
    finite = finite && ofinite;
  }
};

template <typename scalar_t, int VEC>
__device__ __forceinline__ void scan_row(const scalar_t* __restrict__ row, int64_t C, int64_t label,
                                         int lane, Lane& st) {
  if constexpr (VEC > 1) {
    struct alignas(16) Pack {
      scalar_t v[VEC];
    };
    const Pack* packs = reinterpret_cast<const Pack*>(row);
    const int64_t P = C / VEC;
    for (int64_t p = lane; p < P; p += kWarp) {
      const Pack pk = packs[p];
#pragma unroll
      for (int k = 0; k < VEC; ++k) st.push(static_cast<float>(pk.v[k]), p * VEC + k, label);
    }
  } else {
    for (int64_t j = lane; j < C; j += kWarp) st.push(static_cast<float>(row[j]), j, label);
  }
}

template <typename scalar_t, int VEC>
__global__ void __launch_bounds__(kWarp* kRowsPerBlock)
    accumulate_stats_kernel(const scalar_t* __restrict__ logits, const int64_t* __restrict__ labels,
                            const int64_t* __restrict__ indices, int64_t B, int64_t C, int64_t N,
                            int32_t* __restrict__ counts, float* __restrict__ sums,
                            int32_t* __restrict__ flags, unsigned long long* __restrict__ errors) {
  const int lane = threadIdx.x % kWarp;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  if (row >= B) return;  // whole warp leaves together
  const int64_t label = labels[row];
  const int64_t idx = indices[row];
  const bool bad_label = label < 0 || label >= C;
  const bool bad_index = idx < 0 || idx >= N;
  if (bad_label || bad_index) {
    if (lane == 0) {
      atomicOr(errors, (bad_label ? kErrorLabel : 0) | (bad_index ? kErrorIndex : 0));
      atomicMin(errors + 1, static_cast<unsigned long long>(row));
    }
    return;
  }
  const scalar_t* rowp = logits + row * C;
  Lane st;
  scan_row<scalar_t, VEC>(rowp, C, label, lane, st);
#pragma unroll
  for (int off = kWarp / 2; off > 0; off /= 2) st.merge_from(off);
  if (lane != 0) return;

  const RowStats r = finish_row(st.finite, st.m, st.so1, st.so2, static_cast<float>(rowp[label]),
                                st.other, st.best_j == label);
  int32_t* c = counts + idx * kNumCounts;
  float* s = sums + idx * kNumSums;
  atomicAdd(c + kPresentations, 1);
  if (r.correct) atomicAdd(c + kCorrect, 1);
  if (!r.finite) {
    atomicAdd(c + kNonFinite, 1);
  } else {
    atomicAdd(s + kProbSum, r.prob);
    atomicAdd(s + kProbSqSum, r.prob * r.prob);
    atomicAdd(s + kMarginSum, r.margin);
    atomicAdd(s + kLossSum, r.loss);
    atomicAdd(s + kEl2nSum, r.el2n);
  }
  atomicOr(flags + idx, r.correct ? kBatchCorrect : kBatchIncorrect);
}

__global__ void settle_flags_kernel(const int64_t* __restrict__ labels,
                                    const int64_t* __restrict__ indices, int64_t B, int64_t C,
                                    int64_t N, int32_t* __restrict__ counts,
                                    int32_t* __restrict__ flags) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (row >= B) return;
  const int64_t label = labels[row];
  const int64_t idx = indices[row];
  if (label < 0 || label >= C || idx < 0 || idx >= N) return;
  // Every duplicate row of this example tries the same transition; exactly one CAS succeeds, and
  // later rows then see a settled value (no batch bits) and stop.
  int32_t v = flags[idx];
  while (v & (kBatchCorrect | kBatchIncorrect)) {
    bool forgot;
    const int32_t next = settled_flag(v, &forgot);
    const int32_t seen = atomicCAS(flags + idx, v, next);
    if (seen == v) {
      if (forgot) counts[idx * kNumCounts + kForgetting] += 1;  // only the winning row writes
      break;
    }
    v = seen;
  }
}

void accumulate_stats_cuda(const at::Tensor& logits, const at::Tensor& labels,
                           const at::Tensor& indices, at::Tensor& counts, at::Tensor& sums,
                           at::Tensor& flags, at::Tensor& errors) {
  check_accumulate_stats_args(logits, labels, indices, counts, sums, flags, errors);
  const int64_t B = logits.size(0), C = logits.size(1), N = counts.size(0);
  if (B == 0) return;
  const c10::cuda::CUDAGuard guard(logits.device());
  const auto x = logits.contiguous();
  const auto lab = labels.contiguous();
  const auto idx = indices.contiguous();
  auto stream = c10::cuda::getCurrentCUDAStream();
  const dim3 grid(static_cast<unsigned>((B + kRowsPerBlock - 1) / kRowsPerBlock));
  const dim3 block(kWarp * kRowsPerBlock);
  auto* err = reinterpret_cast<unsigned long long*>(errors.data_ptr<int64_t>());
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "accumulate_stats_cuda", [&] {
        constexpr int VEC = 16 / sizeof(scalar_t);
        const bool aligned = C % VEC == 0 && reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 == 0;
        auto launch = [&](auto kernel) {
          kernel<<<grid, block, 0, stream>>>(
              x.data_ptr<scalar_t>(), lab.data_ptr<int64_t>(), idx.data_ptr<int64_t>(), B, C, N,
              counts.data_ptr<int32_t>(), sums.data_ptr<float>(), flags.data_ptr<int32_t>(), err);
        };
        if (aligned) {
          launch(accumulate_stats_kernel<scalar_t, VEC>);
        } else {
          launch(accumulate_stats_kernel<scalar_t, 1>);
        }
      });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  constexpr int kSettleThreads = 256;
  settle_flags_kernel<<<static_cast<unsigned>((B + kSettleThreads - 1) / kSettleThreads),
                        kSettleThreads, 0, stream>>>(
      lab.data_ptr<int64_t>(), idx.data_ptr<int64_t>(), B, C, N, counts.data_ptr<int32_t>(),
      flags.data_ptr<int32_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

TORCH_LIBRARY_IMPL(easyhard, CUDA, m) {
  m.impl("accumulate_stats", &accumulate_stats_cuda);
}

}  // namespace easyhard
