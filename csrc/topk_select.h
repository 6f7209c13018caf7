// Shared definitions of easyhard::topk_select for the CPU and CUDA kernels: argument checks and
// the order-preserving key transform that turns "best first" into "smallest key first".
#pragma once

// The core Tensor type and the operators used, not all of <ATen/ATen.h> (compile time).
#include <ATen/core/Tensor.h>
#include <ATen/ops/bincount.h>
#include <ATen/ops/nonzero.h>
#include <c10/util/Optional.h>

#include <cstdint>
#include <cstring>

#include "accumulate_stats.h"  // EASYHARD_HOST_DEVICE

namespace easyhard {

// Unsigned key that sorts ascending in rank order: for `largest` the biggest score gets the
// smallest key. -0.0 equals +0.0. NaN gets the largest key (ranked last in both directions).
template <typename scalar_t>
struct RankKey;

template <>
struct RankKey<float> {
  using type = uint32_t;
  static EASYHARD_HOST_DEVICE uint32_t of(float x, bool largest) {
    if (x != x) return 0xFFFFFFFFu;
    if (x == 0.f) x = 0.f;
    uint32_t u;
    memcpy(&u, &x, sizeof(u));
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);  // ascending unsigned order of floats
    return largest ? ~u : u;  // finite keys stay below NaN's (the top bit pattern is a NaN)
  }
};

template <>
struct RankKey<double> {
  using type = uint64_t;
  static EASYHARD_HOST_DEVICE uint64_t of(double x, bool largest) {
    if (x != x) return ~uint64_t(0);
    if (x == 0.0) x = 0.0;
    uint64_t u;
    memcpy(&u, &x, sizeof(u));
    const uint64_t sign = uint64_t(1) << 63;
    u = (u & sign) ? ~u : (u | sign);
    return largest ? ~u : u;
  }
};

// Checks shared by every backend. Returns the number of classes C (0 for a global selection).
inline int64_t check_topk_select_args(const at::Tensor& scores, int64_t k,
                                      const c10::optional<at::Tensor>& labels,
                                      const c10::optional<at::Tensor>& budgets) {
  TORCH_CHECK(scores.dim() == 1, "topk_select: scores must be 1-D [N], got ", scores.dim(), "-D");
  TORCH_CHECK(scores.scalar_type() == at::kFloat || scores.scalar_type() == at::kDouble,
              "topk_select: scores must be float32 or float64, got ", scores.scalar_type());
  const int64_t N = scores.size(0);
  TORCH_CHECK(N < (int64_t(1) << 40), "topk_select: N=", N, " is too large");
  TORCH_CHECK(k >= 0 && k <= N, "topk_select: k=", k, " must be in [0, N=", N, "]");
  TORCH_CHECK(labels.has_value() == budgets.has_value(),
              "topk_select: labels and budgets go together (per-class selection) or not at all");
  if (!labels.has_value()) return 0;
  const auto& lab = *labels;
  const auto& bud = *budgets;
  TORCH_CHECK(lab.dim() == 1 && lab.size(0) == N, "topk_select: labels must have shape [", N,
              "] to match scores, got ", lab.sizes());
  TORCH_CHECK(lab.scalar_type() == at::kLong, "topk_select: labels must be int64, got ",
              lab.scalar_type());
  TORCH_CHECK(bud.dim() == 1 && bud.size(0) >= 1, "topk_select: budgets must be 1-D [C], got ",
              bud.sizes());
  TORCH_CHECK(bud.scalar_type() == at::kLong, "topk_select: budgets must be int64, got ",
              bud.scalar_type());
  TORCH_CHECK(lab.device() == scores.device(), "topk_select: labels is on ", lab.device(),
              " but scores is on ", scores.device());
  TORCH_CHECK(bud.device() == scores.device() || bud.device().is_cpu(),
              "topk_select: budgets is on ", bud.device(),
              " but must be on the CPU or on scores' device (", scores.device(), ")");
  return bud.size(0);
}

// Checks the per-class budgets against the class sizes (both on the host) and k.
inline void check_budgets(const int64_t* budgets, const int64_t* class_sizes, int64_t C,
                          int64_t k) {
  int64_t total = 0;
  for (int64_t c = 0; c < C; ++c) {
    TORCH_CHECK(budgets[c] >= 0, "topk_select: budgets[", c, "] = ", budgets[c], " is negative");
    TORCH_CHECK(budgets[c] <= class_sizes[c], "topk_select: budgets[", c, "] = ", budgets[c],
                " exceeds the ", class_sizes[c], " examples of class ", c);
    total += budgets[c];
  }
  TORCH_CHECK(total == k, "topk_select: budgets sum to ", total, " but k=", k);
}

// Checks the values of a per-class selection on any backend (after check_topk_select_args): every
// label in [0, C), the budgets against the class sizes, their sum against k. Returns the class
// sizes, int64 [C] on the CPU. Every kernel calls it before any early return (k = 0, N = 0), so
// that each backend refuses the same arguments for every k. On CUDA it synchronises: selection is
// not a per-step op.
inline at::Tensor check_topk_select_classes(const at::Tensor& labels, const at::Tensor& budgets,
                                            int64_t C, int64_t k) {
  const auto bad = labels.lt(0).logical_or_(labels.ge(C));
  if (bad.any().item<bool>()) {
    const int64_t i = at::nonzero(bad)[0][0].item<int64_t>();
    TORCH_CHECK(false, "topk_select: labels must be in [0, ", C, "): labels[", i,
                "] = ", labels[i].item<int64_t>(), " is outside [0, ", C, ")");
  }
  const auto sizes = at::bincount(labels, {}, C).to(at::kCPU, at::kLong).contiguous();
  const auto bud = budgets.to(at::kCPU).contiguous();
  check_budgets(bud.data_ptr<int64_t>(), sizes.data_ptr<int64_t>(), C, k);
  return sizes;
}

}  // namespace easyhard
