// Shared definitions of easyhard::accumulate_stats for the CPU and CUDA kernels: the state layout,
// the argument checks (identical on every backend) and the per-row formulas.
#pragma once

// The core Tensor type only: <ATen/ATen.h> would add about 9 s of compile time to every file.
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define EASYHARD_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define EASYHARD_HOST_DEVICE inline
#endif

namespace easyhard {

// Columns of the int32 counts state [N, kNumCounts].
constexpr int64_t kPresentations = 0;  // rows seen for this example (this epoch)
constexpr int64_t kCorrect = 1;        // rows whose argmax equals the label
constexpr int64_t kForgetting = 2;     // correct -> incorrect transitions
constexpr int64_t kNonFinite = 3;      // rows holding a NaN or infinite logit
constexpr int64_t kNumCounts = 4;

// Columns of the float32 sums state [N, kNumSums]. Non-finite rows add 0 to every sum (their
// probability counts as 0; margin, loss and EL2N are averaged over finite rows only).
constexpr int64_t kProbSum = 0;    // softmax probability of the true class
constexpr int64_t kProbSqSum = 1;  // its square (for variability)
constexpr int64_t kMarginSum = 2;  // true logit minus the largest other logit
constexpr int64_t kLossSum = 3;    // cross-entropy
constexpr int64_t kEl2nSum = 4;    // || softmax - onehot ||_2
constexpr int64_t kNumSums = 5;

// Bits of the int32 flags state [N]. Only kLastCorrect survives between calls; the two batch bits
// are set while a batch is scattered and cleared when it is settled (see settle_flag).
constexpr int32_t kLastCorrect = 1;
constexpr int32_t kBatchIncorrect = 2;
constexpr int32_t kBatchCorrect = 4;

// Bits of errors[0] (CUDA reports invalid rows there instead of raising; errors[1] holds the
// smallest offending batch row).
constexpr int64_t kErrorLabel = 1;
constexpr int64_t kErrorIndex = 2;

// Argument checks shared by every backend; messages name the argument.
inline void check_accumulate_stats_args(const at::Tensor& logits, const at::Tensor& labels,
                                        const at::Tensor& indices, const at::Tensor& counts,
                                        const at::Tensor& sums, const at::Tensor& flags,
                                        const at::Tensor& errors) {
  TORCH_CHECK(logits.dim() == 2, "accumulate_stats: logits must be 2-D [B, C], got ", logits.dim(),
              "-D");
  TORCH_CHECK(logits.size(1) >= 2,
              "accumulate_stats: logits must have at least 2 classes, got C=", logits.size(1));
  TORCH_CHECK(logits.scalar_type() == at::kFloat || logits.scalar_type() == at::kHalf ||
                  logits.scalar_type() == at::kBFloat16,
              "accumulate_stats: logits must be float32, float16 or bfloat16, got ",
              logits.scalar_type());
  const int64_t B = logits.size(0);
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == B,
              "accumulate_stats: labels must have shape [", B, "] to match logits, got ",
              labels.sizes());
  TORCH_CHECK(indices.dim() == 1 && indices.size(0) == B,
              "accumulate_stats: indices must have shape [", B, "] to match logits, got ",
              indices.sizes());
  TORCH_CHECK(labels.scalar_type() == at::kLong, "accumulate_stats: labels must be int64, got ",
              labels.scalar_type());
  TORCH_CHECK(indices.scalar_type() == at::kLong, "accumulate_stats: indices must be int64, got ",
              indices.scalar_type());
  TORCH_CHECK(counts.dim() == 2 && counts.size(1) == kNumCounts,
              "accumulate_stats: counts must have shape [N, ", kNumCounts, "], got ",
              counts.sizes());
  TORCH_CHECK(counts.scalar_type() == at::kInt, "accumulate_stats: counts must be int32, got ",
              counts.scalar_type());
  const int64_t N = counts.size(0);
  TORCH_CHECK(N < (int64_t(1) << 31),
              "accumulate_stats: at most 2^31-1 examples are supported, got N=", N);
  TORCH_CHECK(sums.dim() == 2 && sums.size(0) == N && sums.size(1) == kNumSums,
              "accumulate_stats: sums must have shape [", N, ", ", kNumSums, "], got ",
              sums.sizes());
  TORCH_CHECK(sums.scalar_type() == at::kFloat, "accumulate_stats: sums must be float32, got ",
              sums.scalar_type());
  TORCH_CHECK(flags.dim() == 1 && flags.size(0) == N, "accumulate_stats: flags must have shape [",
              N, "], got ", flags.sizes());
  TORCH_CHECK(flags.scalar_type() == at::kInt, "accumulate_stats: flags must be int32, got ",
              flags.scalar_type());
  TORCH_CHECK(errors.dim() == 1 && errors.size(0) == 2 && errors.scalar_type() == at::kLong,
              "accumulate_stats: errors must be an int64 tensor of shape [2], got ",
              errors.scalar_type(), " ", errors.sizes());
  TORCH_CHECK(
      counts.is_contiguous() && sums.is_contiguous() && flags.is_contiguous() &&
          errors.is_contiguous(),
      "accumulate_stats: the state tensors counts, sums, flags and errors must be contiguous");
  const auto device = logits.device();
  const std::pair<const char*, const at::Tensor*> others[] = {
      {"labels", &labels}, {"indices", &indices}, {"counts", &counts},
      {"sums", &sums},     {"flags", &flags},     {"errors", &errors}};
  for (const auto& [name, t] : others) {
    TORCH_CHECK(t->device() == device, "accumulate_stats: ", name, " is on ", t->device(),
                " but logits is on ", device, "; move every argument to one device");
  }
}

// Per-row results, from the row's running softmax state.
struct RowStats {
  bool finite;
  bool correct;
  float prob, margin, loss, el2n;
};

// m: max logit over the row; so1 = sum over j != label of exp(x_j - m), so2 the same of
// exp(2 (x_j - m)); xy: true-class logit; maxother: the largest logit of any other class; correct:
// whether the first index of the maximum (as torch.argmax) is the label. Keeping the true class out
// of so1/so2 avoids cancellation for confident rows, where 1 - p_y and EL2N are tiny (the easy
// examples).
EASYHARD_HOST_DEVICE RowStats finish_row(bool finite, float m, float so1, float so2, float xy,
                                         float maxother, bool correct) {
  RowStats r;
  r.finite = finite;
  if (!finite) {
    r.correct = false;
    r.prob = r.margin = r.loss = r.el2n = 0.f;
    return r;
  }
  r.correct = correct;
  const float d = xy - m;  // <= 0
  const float ey = ::expf(d);
  const float s1 = ey + so1;
  r.prob = ey / s1;
  // -log p_y = log(s1) - d; when the true class holds the max, log1p keeps small losses exact.
  r.loss = d == 0.f ? ::log1pf(so1) : ::logf(s1) - d;
  r.margin = xy - maxother;
  // ||p - onehot||^2 = sum_{j != y} p_j^2 + (1 - p_y)^2, with 1 - p_y = so1 / s1.
  const float q = so1 / s1;
  r.el2n = ::sqrtf(so2 / (s1 * s1) + q * q);
  return r;
}

// Resolves one example's flag after every row of a batch has set its batch bits: the example counts
// as correct in this batch only if all its rows were correct. Returns the new flag value and
// whether a forgetting event happened (last-correct before the batch, not correct in it).
EASYHARD_HOST_DEVICE int32_t settled_flag(int32_t v, bool* forgot) {
  const bool incorrect = (v & kBatchIncorrect) != 0;
  *forgot = incorrect && (v & kLastCorrect);
  return incorrect ? 0 : kLastCorrect;
}

}  // namespace easyhard
