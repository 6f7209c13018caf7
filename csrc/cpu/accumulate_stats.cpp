// CPU kernel of easyhard::accumulate_stats.
//
// Rows are independent, so the O(B*C) part (softmax statistics of each row) runs in parallel over
// rows with at::parallel_for, in explicit SIMD (vec.h) compiled once per instruction-set path
// (cpu_capability.h: AVX-512, AVX2, and a baseline that is SSE2 on x86-64 and NEON on aarch64) and
// chosen at run time; the O(B) scatter into the per-example state then runs serially in row order,
// which makes duplicate indices exact and the result deterministic. Per row: one pass for the
// maximum of the other classes and finiteness, one for the exponential sums, each reading the row
// once (the second from L1); float16 and bfloat16 rows are widened once into a float buffer.
// Float sums differ between paths in the last bits (lane counts change the order of additions),
// which is why statistics files record the path.
#include <ATen/Parallel.h>
#include <c10/util/irange.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../accumulate_stats.h"
#include "cpu_capability.h"
#include "vec.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define EASYHARD_X86_PATHS 1
#endif

namespace easyhard {
namespace {

// The statistics of one float32 row: `chunk(j, has_label)` visits the W-lane chunk at j, and only
// the chunk holding the label pays for masking it out of "the other classes".
template <int W>
EASYHARD_VEC_INLINE RowStats row_stats(const float* v, int64_t C, int64_t label) {
  typedef typename Vec<W>::F F;
  typedef typename Vec<W>::I I;
  const float inf = std::numeric_limits<float>::infinity();
  const F ninf = vsplat<W>(-inf);
  const I lane = viota<W>();
  const int64_t full = C - C % W;
  const int64_t label_chunk = label - label % W;
  const I label_lane = vsplat_i<W>(static_cast<int32_t>(label % W));
  // the last C % W logits, padded with -inf (which adds nothing to a maximum or an exp sum)
  alignas(64) float tail_buf[W];
  for (int i = 0; i < W; ++i) tail_buf[i] = full + i < C ? v[full + i] : -inf;
  const F tail = vload<W>(tail_buf);
  const I tail_valid = lane < vsplat_i<W>(static_cast<int32_t>(C - full));

  // Pass 1: the largest other logit and finiteness (x - x is NaN exactly for NaN and +-inf); two
  // accumulators so that the maximum's latency does not bound the loop.
  F mx0 = ninf, mx1 = ninf, bad = vsplat<W>(0.f);
  int64_t j = 0;
  for (; j + 2 * W <= full; j += 2 * W) {
    F a = vload<W>(v + j), b = vload<W>(v + j + W);
    bad += (a - a) + (b - b);
    if (j == label_chunk) a = vselect<W>(lane == label_lane, ninf, a);
    if (j + W == label_chunk) b = vselect<W>(lane == label_lane, ninf, b);
    mx0 = vmax<W>(mx0, a);
    mx1 = vmax<W>(mx1, b);
  }
  for (; j < full; j += W) {
    F a = vload<W>(v + j);
    bad += a - a;
    if (j == label_chunk) a = vselect<W>(lane == label_lane, ninf, a);
    mx0 = vmax<W>(mx0, a);
  }
  {
    F a = tail;
    bad += vselect<W>(tail_valid, a - a, vsplat<W>(0.f));
    if (full == label_chunk) a = vselect<W>(lane == label_lane, ninf, a);
    mx0 = vmax<W>(mx0, a);
  }
  const float xy = v[label];
  if (!(hsum<W>(bad) == 0.f && std::isfinite(xy))) {
    return finish_row(false, 0.f, 0.f, 0.f, 0.f, 0.f, false);
  }
  const float maxother = hmax<W>(vmax<W>(mx0, mx1));
  const float m = std::max(maxother, xy);
  // torch.argmax returns the first maximum: a tie with an earlier class makes the row incorrect.
  bool correct = xy > maxother;
  if (xy == maxother) {
    correct = true;
    for (int64_t k = 0; k < label; ++k) correct &= v[k] != xy;
  }

  // Pass 2: sums of exp(x - m) and its square over the other classes.
  F s1 = vsplat<W>(0.f), s2 = vsplat<W>(0.f);
  const F mv = vsplat<W>(m);
  for (j = 0; j <= full; j += W) {
    F e = vexp_nonpositive<W>((j < full ? vload<W>(v + j) : tail) - mv);
    if (j == label_chunk) e = vselect<W>(lane == label_lane, vsplat<W>(0.f), e);
    s1 += e;
    s2 += e * e;
  }
  return finish_row(true, m, hsum<W>(s1), hsum<W>(s2), xy, maxother, correct);
}

#if defined(EASYHARD_X86_PATHS)
// float16 to float32 with F16C, for the x86 paths: functions of their own, because intrinsics
// may only be called where their instruction set is enabled. Return how many were widened.
__attribute__((target("avx2,f16c"))) int64_t widen_f16c_256(const uint16_t* src, int64_t C,
                                                             float* dst) {
  int64_t j = 0;
  for (; j + 8 <= C; j += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + j));
    _mm256_storeu_ps(dst + j, _mm256_cvtph_ps(h));
  }
  return j;
}

__attribute__((target("avx512f,avx2,f16c"))) int64_t widen_f16c_512(const uint16_t* src,
                                                                    int64_t C, float* dst) {
  int64_t j = 0;
  for (; j + 16 <= C; j += 16) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + j));
    _mm512_storeu_ps(dst + j, _mm512_cvtph_ps(h));
  }
  return j;
}
#endif

// Widening a float16 / bfloat16 row to float32 (kF16c: the x86 path's F16C instructions).
template <int W, bool kF16c>
EASYHARD_VEC_INLINE void widen(const c10::Half* src, int64_t C, float* dst) {
  const auto* bits = reinterpret_cast<const uint16_t*>(src);
  int64_t j = 0;
#if defined(EASYHARD_X86_PATHS)
  if constexpr (kF16c) j = W == 16 ? widen_f16c_512(bits, C, dst) : widen_f16c_256(bits, C, dst);
#endif
  for (; j + W <= C; j += W) {
    const auto f = vload_f16_bits<W>(bits + j);
    std::memcpy(dst + j, &f, sizeof(f));
  }
  for (; j < C; ++j) dst[j] = static_cast<float>(src[j]);
}

template <int W, bool kF16c>
EASYHARD_VEC_INLINE void widen(const c10::BFloat16* src, int64_t C, float* dst) {
  const auto* bits = reinterpret_cast<const uint16_t*>(src);
  int64_t j = 0;
  for (; j + W <= C; j += W) {
    const auto f = vload_bf16<W>(bits + j);
    std::memcpy(dst + j, &f, sizeof(f));
  }
  for (; j < C; ++j) dst[j] = static_cast<float>(src[j]);
}

// Rows [begin, end) of one path; `buf` holds C floats (unused for float32 logits).
template <int W, bool kF16c, typename scalar_t>
EASYHARD_VEC_INLINE void rows_of_path(const scalar_t* base, int64_t begin, int64_t end, int64_t C,
                                      const int64_t* lab, RowStats* rows, float* buf) {
  for (int64_t i = begin; i < end; ++i) {
    const scalar_t* src = base + i * C;
    if constexpr (std::is_same_v<scalar_t, float>) {
      rows[i] = row_stats<W>(src, C, lab[i]);
    } else {
      widen<W, kF16c>(src, C, buf);
      rows[i] = row_stats<W>(buf, C, lab[i]);
    }
  }
}

// One function per path, compiled for its instruction set (function-level target attributes, so
// no other code of this file, and nothing the linker could share, is built for it).
template <typename scalar_t>
void rows_baseline(const scalar_t* base, int64_t begin, int64_t end, int64_t C, const int64_t* lab,
                   RowStats* rows, float* buf) {
  rows_of_path<4, false>(base, begin, end, C, lab, rows, buf);
}

#if defined(EASYHARD_X86_PATHS)
template <typename scalar_t>
__attribute__((target("avx2,fma,f16c"))) void rows_avx2(const scalar_t* base, int64_t begin,
                                                         int64_t end, int64_t C,
                                                         const int64_t* lab, RowStats* rows,
                                                         float* buf) {
  rows_of_path<8, true>(base, begin, end, C, lab, rows, buf);
}

template <typename scalar_t>
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c"))) void rows_avx512(
    const scalar_t* base, int64_t begin, int64_t end, int64_t C, const int64_t* lab,
    RowStats* rows, float* buf) {
  rows_of_path<16, true>(base, begin, end, C, lab, rows, buf);
}
#endif

template <typename scalar_t>
using RowsFn = void (*)(const scalar_t*, int64_t, int64_t, int64_t, const int64_t*, RowStats*,
                        float*);

template <typename scalar_t>
RowsFn<scalar_t> rows_fn(cpu::Path path) {
#if defined(EASYHARD_X86_PATHS)
  if (path == cpu::Path::kAvx512) return &rows_avx512<scalar_t>;
  if (path == cpu::Path::kAvx2) return &rows_avx2<scalar_t>;
#endif
  (void)path;
  return &rows_baseline<scalar_t>;
}

// Statistics of every row, in parallel over rows.
template <typename scalar_t>
void compute_rows(const scalar_t* base, int64_t B, int64_t C, const int64_t* lab, RowStats* rows,
                  cpu::Path path) {
  const RowsFn<scalar_t> fn = rows_fn<scalar_t>(path);
  const int64_t grain = std::max<int64_t>(1, 32768 / C);
  at::parallel_for(0, B, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> buf;
    if constexpr (!std::is_same_v<scalar_t, float>) buf.resize(C);
    fn(base, begin, end, C, lab, rows, buf.data());
  });
}

void accumulate_stats_cpu(const at::Tensor& logits, const at::Tensor& labels,
                          const at::Tensor& indices, at::Tensor& counts, at::Tensor& sums,
                          at::Tensor& flags, at::Tensor& errors) {
  check_accumulate_stats_args(logits, labels, indices, counts, sums, flags, errors);
  const int64_t B = logits.size(0), C = logits.size(1), N = counts.size(0);
  TORCH_CHECK(C < (int64_t(1) << 31),
              "accumulate_stats: at most 2^31-1 classes are supported, got C=", C);
  const cpu::Path path = cpu::selected_path();  // raises for a bad EASYHARD_CPU_CAPABILITY
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
  switch (x.scalar_type()) {  // the three dtypes check_accumulate_stats_args admits
    case at::kFloat:
      compute_rows(x.data_ptr<float>(), B, C, lab, rows.data(), path);
      break;
    case at::kHalf:
      compute_rows(x.data_ptr<c10::Half>(), B, C, lab, rows.data(), path);
      break;
    default:
      compute_rows(x.data_ptr<c10::BFloat16>(), B, C, lab, rows.data(), path);
      break;
  }

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
