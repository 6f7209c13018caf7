// easyhard's operator schema: the table of contents of the extension.
//
// Every op is declared here once; backends register kernels in csrc/cpu/<op>.cpp and
// csrc/cuda/<op>.cu, Python wrappers and fake (meta) kernels live in easyhard/ops.py, and the
// pure-PyTorch reference of each op lives in easyhard/reference.py.
#include <torch/library.h>

TORCH_LIBRARY(easyhard, m) {
  // One fused pass over a batch of logits [B, C]: per-row correctness, true-class probability,
  // margin, cross-entropy and EL2N, added into per-example epoch accumulators for a dataset of N
  // examples (counts int32 [N, 4], sums float32 [N, 5], flags int32 [N]). Invalid labels or indices
  // raise on CPU; on CUDA they are skipped and recorded in `errors` (int64 [2]) without a sync.
  m.def(
      "accumulate_stats(Tensor logits, Tensor labels, Tensor indices, Tensor(a!) counts, "
      "Tensor(b!) sums, Tensor(c!) flags, Tensor(d!) errors) -> ()");
  // Indices (int64 [k], ascending) of the k best-ranked of N scores (float32/float64 [N]): the
  // largest or smallest, ties broken by smaller dataset index, NaN ranked last. With labels [N]
  // and budgets [C] (int64), budgets[c] per class c in one segmented selection (k = sum(budgets)).
  m.def(
      "topk_select(Tensor scores, int k, bool largest, Tensor? labels=None, "
      "Tensor? budgets=None) -> Tensor");
}
