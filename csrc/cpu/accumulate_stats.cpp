// CPU kernel of easyhard::accumulate_stats.
//
// Rows are independent, so the O(B*C) part (softmax statistics of each row) runs in parallel over
// rows with at::parallel_for, in explicit SIMD (vec.h) compiled once per instruction-set path
// (cpu_capability.h: AVX-512, AVX2, and a baseline that is SSE2 on x86-64 and NEON on aarch64) and
// chosen at run time; the O(B) scatter into the per-example state then runs with each example
// owned by one thread, in row order, which makes duplicate indices exact and the result
// deterministic. Per row: one pass for the
// maximum of the other classes and finiteness, one for the exponential sums, each reading the row
// once (the second from L1); float16 and bfloat16 rows are widened during the first pass into a
// float buffer that the second reads.
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

// The per-row part, once per path (see accumulate_stats_rows.h).
#define EASYHARD_PATH baseline
#define EASYHARD_PATH_TARGET
#define EASYHARD_PATH_W 4
#define EASYHARD_PATH_F16C 0
#include "accumulate_stats_rows.h"
#undef EASYHARD_PATH
#undef EASYHARD_PATH_TARGET
#undef EASYHARD_PATH_W
#undef EASYHARD_PATH_F16C

#if defined(EASYHARD_X86_PATHS)
#define EASYHARD_PATH avx2
#define EASYHARD_PATH_TARGET __attribute__((target("avx2,fma,f16c")))
#define EASYHARD_PATH_W 8
#define EASYHARD_PATH_F16C 1
#include "accumulate_stats_rows.h"
#undef EASYHARD_PATH
#undef EASYHARD_PATH_TARGET
#undef EASYHARD_PATH_W
#undef EASYHARD_PATH_F16C

#define EASYHARD_PATH avx512
#define EASYHARD_PATH_TARGET \
  __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")))
#define EASYHARD_PATH_W 16
#define EASYHARD_PATH_F16C 1
#include "accumulate_stats_rows.h"
#undef EASYHARD_PATH
#undef EASYHARD_PATH_TARGET
#undef EASYHARD_PATH_W
#undef EASYHARD_PATH_F16C
#endif

namespace easyhard {
namespace {

// Logits per parallel chunk of rows (128 KiB of float32: far more work than starting a chunk).
constexpr int64_t kRowGrainLogits = 32768;

template <typename scalar_t>
using RowsFn = void (*)(const scalar_t*, int64_t, int64_t, int64_t, const int64_t*, RowStats*,
                        float*);

// The rows code of `path` for rows of C logits. A row shorter than a path's vector would go
// through that path's scalar loop, so it takes the widest narrower path whose vector it fills
// (C = 10 classes: AVX-512's 16 lanes ran it 2x slower than AVX2's 8 did). The choice depends
// only on (path, C), so a run's float sums are still a function of its recorded path.
template <typename scalar_t>
RowsFn<scalar_t> rows_fn(cpu::Path path, int64_t C) {
#if defined(EASYHARD_X86_PATHS)
  if (path == cpu::Path::kAvx512 && C >= 16) return &avx512::rows<scalar_t>;
  if ((path == cpu::Path::kAvx512 || path == cpu::Path::kAvx2) && C >= 8) {
    return &avx2::rows<scalar_t>;
  }
#endif
  (void)path;
  (void)C;
  return &baseline::rows<scalar_t>;
}

// Statistics of every row, in parallel over rows.
template <typename scalar_t>
void compute_rows(const scalar_t* base, int64_t B, int64_t C, const int64_t* lab, RowStats* rows,
                  cpu::Path path) {
  const RowsFn<scalar_t> fn = rows_fn<scalar_t>(path, C);
  const int64_t grain = std::max<int64_t>(1, kRowGrainLogits / C);
  at::parallel_for(0, B, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> buf;
    if constexpr (!std::is_same_v<scalar_t, float>) buf.resize(C);
    fn(base, begin, end, C, lab, rows, buf.data());
  });
}

// Adds each row's statistics into its example's state. Each example's rows are added in row order
// by one thread, so counts are exact and sums deterministic with duplicate indices whatever the
// thread count; the examples are shared out between threads by index (owner = index mod owners,
// a power of two, so a mask).
void scatter_rows(const RowStats* rows, const int64_t* idx, int64_t B, int64_t C, int32_t* cnt,
                  float* sm, int32_t* fl) {
  // A thread pays for itself from a few hundred rows on (each scans every row's index), and only
  // where the rows were computed in parallel (threads already awake: waking them costs more).
  const int64_t want =
      B * C < 2 * kRowGrainLogits ? 1 : std::clamp<int64_t>(B / 256, 1, at::get_num_threads());
  int64_t owners = 1;
  while (owners * 2 <= want) owners *= 2;
  const int64_t mask = owners - 1;
  at::parallel_for(0, owners, 1, [&](int64_t first, int64_t last) {
    for (int64_t owner = first; owner < last; ++owner) {
      for (int64_t i = 0; i < B; ++i) {
        if ((idx[i] & mask) != owner) continue;
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
      for (int64_t i = 0; i < B; ++i) {
        if ((idx[i] & mask) != owner) continue;
        int32_t& f = fl[idx[i]];
        if ((f & (kBatchCorrect | kBatchIncorrect)) == 0) continue;  // settled by a duplicate
        bool forgot;
        f = settled_flag(f, &forgot);
        cnt[idx[i] * kNumCounts + kForgetting] += forgot;
      }
    }
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

  scatter_rows(rows.data(), idx, B, C, counts.data_ptr<int32_t>(), sums.data_ptr<float>(),
               flags.data_ptr<int32_t>());
}

}  // namespace

TORCH_LIBRARY_IMPL(easyhard, CPU, m) {
  m.impl("accumulate_stats", &accumulate_stats_cpu);
}

}  // namespace easyhard
