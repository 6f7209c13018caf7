// CPU kernel of easyhard::accumulate_stats.
//
// Rows are independent, so the O(B*C) part (softmax statistics of each row) runs in parallel over
// rows with at::parallel_for; the O(B) scatter into the per-example state then runs serially in row
// order, which makes duplicate indices exact and the result deterministic.
#include <ATen/Parallel.h>
#include <c10/util/irange.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../accumulate_stats.h"

namespace easyhard {
namespace {

// exp(x) for x <= 0, branch-free so that the loop below vectorizes (Cephes-style range reduction
// and a degree-6 polynomial, about 1 ulp). Rounding uses the 1.5 * 2^23 trick rather than roundf,
// which would not vectorize on a baseline x86-64 target. Values below -87 flush to 0, as expf
// underflows there.
inline float exp_nonpositive(float x) {
  const float xc = x < -87.f ? -87.f : x;
  const float shifted = xc * 1.44269504088896341f + 12582912.f;  // round to nearest integer
  const float n = shifted - 12582912.f;
  const float r = (xc - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  const int32_t n_int = static_cast<int32_t>(n);
  const int32_t bits = (n_int + 127) << 23;
  float scale;
  __builtin_memcpy(&scale, &bits, sizeof(scale));
  return x < -87.f ? 0.f : p * scale;
}

// The two passes over one row, compiled for AVX-512, AVX2 and a baseline with run-time dispatch
// (GCC/Clang function multiversioning) where the toolchain supports it.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define EASYHARD_CLONES __attribute__((target_clones("avx512f", "avx2,fma", "default")))
#else
#define EASYHARD_CLONES
#endif

// Largest value of v[0, n) (-inf for n == 0) and whether every element is finite.
EASYHARD_CLONES void row_max(const float* v, int64_t n, float* out_max, bool* out_finite) {
  float m = -std::numeric_limits<float>::infinity();
  float bad = 0.f;  // x - x is NaN exactly for NaN and +-inf
  // The simd reductions allow reordering the float accumulations (built with -fopenmp-simd, no
  // OpenMP runtime); sums then differ from a sequential loop only by rounding.
#pragma omp simd reduction(max : m) reduction(+ : bad)
  for (int64_t j = 0; j < n; ++j) {
    m = v[j] > m ? v[j] : m;
    bad += v[j] - v[j];
  }
  *out_max = m;
  *out_finite = bad == 0.f;
}

EASYHARD_CLONES void row_exp_sums(const float* v, int64_t n, float m, float* out_s1,
                                  float* out_s2) {
  float s1 = 0.f, s2 = 0.f;
#pragma omp simd reduction(+ : s1, s2)
  for (int64_t j = 0; j < n; ++j) {
    const float e = exp_nonpositive(v[j] - m);
    s1 += e;
    s2 += e * e;
  }
  *out_s1 = s1;
  *out_s2 = s2;
}

RowStats row_stats(const float* v, int64_t C, int64_t label) {
  // Pass 1: the maxima before and after the label, so that the true class stays out of "other".
  float before, after;
  bool finite_before, finite_after;
  row_max(v, label, &before, &finite_before);
  row_max(v + label + 1, C - label - 1, &after, &finite_after);
  const float xy = v[label];
  if (!(finite_before && finite_after && std::isfinite(xy))) {
    return finish_row(false, 0.f, 0.f, 0.f, 0.f, 0.f, false);
  }
  const float maxother = std::max(before, after);
  const float m = std::max(maxother, xy);
  // torch.argmax returns the first maximum: the label wins ties only with later classes.
  const bool correct = xy >= after && xy > before;
  // Pass 2: sums over the other classes, [0, label) and (label, C).
  float a1, a2, b1, b2;
  row_exp_sums(v, label, m, &a1, &a2);
  row_exp_sums(v + label + 1, C - label - 1, m, &b1, &b2);
  return finish_row(true, m, a1 + b1, a2 + b2, xy, maxother, correct);
}

// Statistics of every row, in parallel over rows; reduced-precision rows are widened to float32
// into a per-thread buffer first.
template <typename scalar_t>
void compute_rows(const scalar_t* base, int64_t B, int64_t C, const int64_t* lab, RowStats* rows) {
  const int64_t grain = std::max<int64_t>(1, 32768 / C);
  at::parallel_for(0, B, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> buf;
    if constexpr (!std::is_same_v<scalar_t, float>) buf.resize(C);
    for (int64_t i = begin; i < end; ++i) {
      const scalar_t* src = base + i * C;
      if constexpr (std::is_same_v<scalar_t, float>) {
        rows[i] = row_stats(src, C, lab[i]);
      } else {
        for (int64_t j = 0; j < C; ++j) buf[j] = static_cast<float>(src[j]);
        rows[i] = row_stats(buf.data(), C, lab[i]);
      }
    }
  });
}

void accumulate_stats_cpu(const at::Tensor& logits, const at::Tensor& labels,
                          const at::Tensor& indices, at::Tensor& counts, at::Tensor& sums,
                          at::Tensor& flags, at::Tensor& errors) {
  check_accumulate_stats_args(logits, labels, indices, counts, sums, flags, errors);
  const int64_t B = logits.size(0), C = logits.size(1), N = counts.size(0);
  const auto labels_c = labels.contiguous();
  const auto indices_c = indices.contiguous();
  const int64_t* lab = labels_c.data_ptr<int64_t>();
  const int64_t* idx = indices_c.data_ptr<int64_t>();
  // Validate every row before touching the state: a refused batch changes nothing.
  for (const auto i : c10::irange(B)) {
    TORCH_CHECK(lab[i] >= 0 && lab[i] < C, "accumulate_stats: labels[", i, "] = ", lab[i],
                " is outside [0, ", C, ")");
    TORCH_CHECK(idx[i] >= 0 && idx[i] < N, "accumulate_stats: indices[", i, "] = ", idx[i],
                " is outside [0, ", N, ")");
  }
  if (B == 0) return;

  std::vector<RowStats> rows(B);
  const auto x = logits.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "accumulate_stats_cpu",
      [&] { compute_rows(x.data_ptr<scalar_t>(), B, C, lab, rows.data()); });

  // Serial scatter in row order: exact counts and deterministic sums with duplicate indices.
  int32_t* cnt = counts.data_ptr<int32_t>();
  float* sm = sums.data_ptr<float>();
  int32_t* fl = flags.data_ptr<int32_t>();
  for (const auto i : c10::irange(B)) {
    const RowStats& r = rows[i];
    int32_t* c = cnt + idx[i] * kNumCounts;
    float* s = sm + idx[i] * kNumSums;
    c[kPresentations] += 1;
    c[kCorrect] += r.correct;
    c[kNonFinite] += !r.finite;
    s[kProbSum] += r.prob;
    s[kProbSqSum] += r.prob * r.prob;
    s[kMarginSum] += r.margin;
    s[kLossSum] += r.loss;
    s[kEl2nSum] += r.el2n;
    fl[idx[i]] |= r.correct ? kBatchCorrect : kBatchIncorrect;
  }
  for (const auto i : c10::irange(B)) {
    int32_t& f = fl[idx[i]];
    if ((f & (kBatchCorrect | kBatchIncorrect)) == 0) continue;  // settled by an earlier duplicate
    bool forgot;
    f = settled_flag(f, &forgot);
    cnt[idx[i] * kNumCounts + kForgetting] += forgot;
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(easyhard, CPU, m) {
  m.impl("accumulate_stats", &accumulate_stats_cpu);
}

}  // namespace easyhard
