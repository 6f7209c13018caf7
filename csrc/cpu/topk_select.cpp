// CPU kernel of easyhard::topk_select.
//
// Each example gets a (rank key, index) pair; std::nth_element finds the k smallest pairs in O(N)
// (ties fall to the smaller index because the index is the second member of the pair). Per-class
// selection first buckets the pairs by label (a counting sort, stable in index order), then runs
// nth_element inside every class's segment in parallel over classes. The chosen examples are
// marked in a mask and read back in ascending index order.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "../topk_select.h"

namespace easyhard {
namespace {

template <typename scalar_t>
at::Tensor topk_select_impl(const at::Tensor& scores, int64_t k, bool largest,
                            const c10::optional<at::Tensor>& labels,
                            const c10::optional<at::Tensor>& budgets, int64_t C,
                            const at::Tensor& class_sizes) {
  using key_t = typename RankKey<scalar_t>::type;
  using Entry = std::pair<key_t, int64_t>;
  const int64_t N = scores.size(0);
  const auto s = scores.contiguous();
  const scalar_t* x = s.data_ptr<scalar_t>();
  std::vector<uint8_t> chosen(N, 0);

  if (C == 0) {
    std::vector<Entry> e(N);
    at::parallel_for(0, N, 1 << 16, [&](int64_t b, int64_t end) {
      for (int64_t i = b; i < end; ++i) e[i] = {RankKey<scalar_t>::of(x[i], largest), i};
    });
    if (k > 0 && k < N) std::nth_element(e.begin(), e.begin() + k, e.end());
    for (int64_t i = 0; i < k; ++i) chosen[e[i].second] = 1;
  } else {
    const auto lab_t = labels->contiguous();
    const int64_t* lab = lab_t.data_ptr<int64_t>();
    const auto bud_t = budgets->to(at::kCPU).contiguous();
    const int64_t* bud = bud_t.data_ptr<int64_t>();
    const int64_t* sizes = class_sizes.data_ptr<int64_t>();  // labels and budgets are checked
    std::vector<int64_t> offset(C + 1, 0);
    for (int64_t c = 0; c < C; ++c) offset[c + 1] = offset[c] + sizes[c];
    std::vector<Entry> e(N);
    std::vector<int64_t> fill(offset.begin(), offset.end() - 1);
    for (int64_t i = 0; i < N; ++i) e[fill[lab[i]]++] = {RankKey<scalar_t>::of(x[i], largest), i};
    at::parallel_for(0, C, 1, [&](int64_t b, int64_t end) {
      for (int64_t c = b; c < end; ++c) {
        auto first = e.begin() + offset[c], last = e.begin() + offset[c + 1];
        if (bud[c] > 0 && bud[c] < last - first) std::nth_element(first, first + bud[c], last);
        for (int64_t j = 0; j < bud[c]; ++j) chosen[first[j].second] = 1;
      }
    });
  }
  auto out = at::empty({k}, scores.options().dtype(at::kLong));
  int64_t* o = out.data_ptr<int64_t>();
  int64_t n = 0;
  for (int64_t i = 0; i < N; ++i) {
    if (chosen[i]) o[n++] = i;
  }
  TORCH_INTERNAL_ASSERT(n == k, "topk_select: selected ", n, " of ", k);
  return out;
}

at::Tensor topk_select_cpu(const at::Tensor& scores, int64_t k, bool largest,
                           const c10::optional<at::Tensor>& labels,
                           const c10::optional<at::Tensor>& budgets) {
  const int64_t C = check_topk_select_args(scores, k, labels, budgets);
  const at::Tensor sizes = C ? check_topk_select_classes(*labels, *budgets, C, k) : at::Tensor();
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES(scores.scalar_type(), "topk_select_cpu", [&] {
    out = topk_select_impl<scalar_t>(scores, k, largest, labels, budgets, C, sizes);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(easyhard, CPU, m) {
  m.impl("topk_select", &topk_select_cpu);
}

}  // namespace easyhard
