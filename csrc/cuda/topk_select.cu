// CUDA kernels of easyhard::topk_select.
//
// Rank keys are computed per example, then CUB's stable radix sort orders (key, index) pairs;
// because indices enter in ascending order and the sort is stable, equal keys stay ordered by
// index, exactly as on the CPU. Per-class selection sorts a second time, stably, by label, which
// groups each class while keeping its rank order; an example is chosen when its position inside
// its class's segment is below that class's budget. Chosen examples are marked in a mask and
// compacted with DeviceSelect::Flagged, which yields ascending indices. Validation of labels and
// budgets (check_topk_select_classes, shared with the CPU kernel and run before the early return
// for k = 0) needs their values on the host: selection is not a per-step op, so it synchronises.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <thrust/iterator/counting_iterator.h>
#include <torch/library.h>
#include <cub/cub.cuh>

#include "../topk_select.h"

namespace easyhard {
namespace {

constexpr int kThreads = 256;

unsigned blocks_for(int64_t n) {
  return static_cast<unsigned>((n + kThreads - 1) / kThreads);
}

template <typename scalar_t, typename key_t>
__global__ void rank_keys_kernel(const scalar_t* __restrict__ x, int64_t N, bool largest,
                                 key_t* __restrict__ keys, int64_t* __restrict__ idx) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= N) return;
  keys[i] = RankKey<scalar_t>::of(x[i], largest);
  idx[i] = i;
}

__global__ void gather_labels_kernel(const int64_t* __restrict__ labels,
                                     const int64_t* __restrict__ idx, int64_t N,
                                     int32_t* __restrict__ out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < N) out[i] = static_cast<int32_t>(labels[idx[i]]);
}

// Global: the first k positions of the sorted order are chosen.
__global__ void mark_prefix_kernel(const int64_t* __restrict__ idx, int64_t k,
                                   uint8_t* __restrict__ chosen) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < k) chosen[idx[i]] = 1;
}

// Per class: position within the class segment below the class's budget.
__global__ void mark_segments_kernel(const int32_t* __restrict__ lab,
                                     const int64_t* __restrict__ idx, int64_t N,
                                     const int64_t* __restrict__ offsets,
                                     const int64_t* __restrict__ budgets,
                                     uint8_t* __restrict__ chosen) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= N) return;
  const int32_t c = lab[i];
  if (i - offsets[c] < budgets[c]) chosen[idx[i]] = 1;
}

template <typename F>
void run_cub(F&& f, const at::TensorOptions& opts) {
  size_t bytes = 0;
  C10_CUDA_CHECK(f(nullptr, bytes));
  auto tmp = at::empty({static_cast<int64_t>(bytes) + 1}, opts.dtype(at::kByte));
  C10_CUDA_CHECK(f(tmp.data_ptr(), bytes));
}

template <typename scalar_t>
at::Tensor topk_select_impl(const at::Tensor& scores, int64_t k, bool largest,
                            const c10::optional<at::Tensor>& labels,
                            const c10::optional<at::Tensor>& budgets, int64_t C,
                            const at::Tensor& sizes) {
  using key_t = typename RankKey<scalar_t>::type;
  const int64_t N = scores.size(0);
  TORCH_CHECK(N < (int64_t(1) << 31), "topk_select: CUDA supports N < 2^31, got ", N);
  const auto opts = scores.options();
  auto stream = c10::cuda::getCurrentCUDAStream();
  const auto s = scores.contiguous();
  auto out = at::empty({k}, opts.dtype(at::kLong));
  if (k == 0 || N == 0) return out;
  const int n = static_cast<int>(N);

  auto keys = at::empty({N}, opts.dtype(sizeof(key_t) == 4 ? at::kInt : at::kLong));
  auto keys_sorted = at::empty_like(keys);
  auto idx = at::empty({N}, opts.dtype(at::kLong));
  auto idx_sorted = at::empty_like(idx);
  auto* k_in = reinterpret_cast<key_t*>(keys.data_ptr());
  auto* k_out = reinterpret_cast<key_t*>(keys_sorted.data_ptr());
  rank_keys_kernel<scalar_t, key_t><<<blocks_for(N), kThreads, 0, stream>>>(
      s.data_ptr<scalar_t>(), N, largest, k_in, idx.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  run_cub(
      [&](void* tmp, size_t& bytes) {
        return cub::DeviceRadixSort::SortPairs(tmp, bytes, k_in, k_out, idx.data_ptr<int64_t>(),
                                               idx_sorted.data_ptr<int64_t>(), n, 0,
                                               static_cast<int>(sizeof(key_t) * 8), stream);
      },
      opts);

  auto chosen = at::zeros({N}, opts.dtype(at::kByte));
  if (C == 0) {
    mark_prefix_kernel<<<blocks_for(k), kThreads, 0, stream>>>(idx_sorted.data_ptr<int64_t>(), k,
                                                               chosen.data_ptr<uint8_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  } else {
    const auto lab = labels->contiguous();  // values checked with the class sizes
    const auto bud_host = budgets->to(at::kCPU).contiguous();
    auto offsets = (at::cumsum(sizes, 0) - sizes).to(scores.device());
    auto bud = bud_host.to(scores.device());
    auto lab_sorted_in = at::empty({N}, opts.dtype(at::kInt));
    auto lab_sorted_out = at::empty_like(lab_sorted_in);
    gather_labels_kernel<<<blocks_for(N), kThreads, 0, stream>>>(lab.data_ptr<int64_t>(),
                                                                 idx_sorted.data_ptr<int64_t>(), N,
                                                                 lab_sorted_in.data_ptr<int32_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    int bits = 1;
    while ((int64_t(1) << bits) < C) ++bits;
    run_cub(
        [&](void* tmp, size_t& bytes) {
          return cub::DeviceRadixSort::SortPairs(
              tmp, bytes, lab_sorted_in.data_ptr<int32_t>(), lab_sorted_out.data_ptr<int32_t>(),
              idx_sorted.data_ptr<int64_t>(), idx.data_ptr<int64_t>(), n, 0, bits, stream);
        },
        opts);
    mark_segments_kernel<<<blocks_for(N), kThreads, 0, stream>>>(
        lab_sorted_out.data_ptr<int32_t>(), idx.data_ptr<int64_t>(), N, offsets.data_ptr<int64_t>(),
        bud.data_ptr<int64_t>(), chosen.data_ptr<uint8_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  auto count = at::empty({1}, opts.dtype(at::kInt));
  run_cub(
      [&](void* tmp, size_t& bytes) {
        return cub::DeviceSelect::Flagged(tmp, bytes, thrust::counting_iterator<int64_t>(0),
                                          chosen.data_ptr<uint8_t>(), out.data_ptr<int64_t>(),
                                          count.data_ptr<int32_t>(), n, stream);
      },
      opts);
  return out;
}

at::Tensor topk_select_cuda(const at::Tensor& scores, int64_t k, bool largest,
                            const c10::optional<at::Tensor>& labels,
                            const c10::optional<at::Tensor>& budgets) {
  const int64_t C = check_topk_select_args(scores, k, labels, budgets);
  TORCH_CHECK(scores.is_cuda(), "topk_select: scores is on ", scores.device(),
              " but another argument is on a CUDA device; move every argument to one device");
  const c10::cuda::CUDAGuard guard(scores.device());
  // Before topk_select_impl's early return for k = 0: every k is validated alike.
  const at::Tensor sizes = C ? check_topk_select_classes(*labels, *budgets, C, k) : at::Tensor();
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES(scores.scalar_type(), "topk_select_cuda", [&] {
    out = topk_select_impl<scalar_t>(scores, k, largest, labels, budgets, C, sizes);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(easyhard, CUDA, m) {
  m.impl("topk_select", &topk_select_cuda);
}

}  // namespace easyhard
