// The per-row part of the CPU kernel of easyhard::accumulate_stats, written once and compiled
// once per instruction-set path: csrc/cpu/accumulate_stats.cpp includes this file for each path
// with these macros defined (no include guard, on purpose):
//
//   EASYHARD_PATH         the path's namespace (baseline, avx2, avx512)
//   EASYHARD_PATH_TARGET  the function attribute that enables its instructions (empty: baseline)
//   EASYHARD_PATH_W       float lanes per vector (4, 8, 16)
//   EASYHARD_PATH_F16C    1 where float16 is widened by F16C instructions
//
// Every function carries EASYHARD_PATH_TARGET, so intrinsics of the path may be called here and
// the vector helpers of vec.h (always_inline) are compiled inside with the path's instructions;
// every function has internal linkage, so the linker can never hand one path's code to another.
namespace easyhard {
namespace EASYHARD_PATH {
namespace {

constexpr int W = EASYHARD_PATH_W;

// W logits at p as float32 lanes.
template <typename T>
EASYHARD_PATH_TARGET EASYHARD_VEC_INLINE typename Vec<W>::F load_logits(const T* p) {
  if constexpr (std::is_same_v<T, float>) {
    return vload<W>(p);
  } else if constexpr (std::is_same_v<T, c10::BFloat16>) {
    // bfloat16 is the upper half of a float32: widen and shift (GCC's generic lowering of the
    // vector-extension version takes 4 instructions on AVX2 where 2 do)
#if defined(EASYHARD_X86_PATHS) && EASYHARD_PATH_W == 16
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return reinterpret_cast<typename Vec<W>::F>(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
#elif defined(EASYHARD_X86_PATHS) && EASYHARD_PATH_W == 8
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return reinterpret_cast<typename Vec<W>::F>(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
#elif defined(EASYHARD_X86_PATHS)
    const __m128i h = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
    return reinterpret_cast<typename Vec<W>::F>(_mm_unpacklo_epi16(_mm_setzero_si128(), h));
#else
    return vload_bf16<W>(reinterpret_cast<const uint16_t*>(p));
#endif
  } else {
#if EASYHARD_PATH_F16C && EASYHARD_PATH_W == 16
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return reinterpret_cast<typename Vec<W>::F>(_mm512_cvtph_ps(h));
#elif EASYHARD_PATH_F16C
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return reinterpret_cast<typename Vec<W>::F>(_mm256_cvtph_ps(h));
#else
    return vload_f16_bits<W>(reinterpret_cast<const uint16_t*>(p));  // exact, without F16C
#endif
  }
}

// The statistics of one row of C logits (float32, float16 or bfloat16). Reduced-precision rows
// are widened in pass 1, which leaves the float32 row in `buf` (C floats) for pass 2; a float32
// row is read in place. Only the chunk holding the label pays for masking it out of "the other
// classes". The last C % W logits come as one vector ending at C, overlapping the chunk before it
// (a maximum and a finiteness test may see a logit twice; the sums mask the repeats out), so no
// row ever goes through a scalar loop unless it is shorter than W.
template <typename T>
EASYHARD_PATH_TARGET EASYHARD_VEC_INLINE RowStats row_stats(const T* src, int64_t C, int64_t label,
                                                            float* buf) {
  typedef typename Vec<W>::F F;
  typedef typename Vec<W>::I I;
  constexpr bool kWiden = !std::is_same_v<T, float>;
  const float inf = std::numeric_limits<float>::infinity();
  const F ninf = vsplat<W>(-inf), zero = vsplat<W>(0.f);
  const I lane = viota<W>();
  const int64_t rem = C % W, full = C - rem;
  const int64_t label_chunk = label - label % W;
  const I label_lane = vsplat_i<W>(static_cast<int32_t>(label % W));
  // The tail vector: the W logits ending at C (or, for C < W, the row padded with -inf); its
  // lanes that pass 2 counts, and the label's lane in it.
  const int64_t tail_start = C >= W ? C - W : 0;
  F tail = ninf;
  I tail_counted = lane < 0, tail_label = lane < 0;  // all false
  if (rem) {
    if (C >= W) {
      tail = load_logits(src + tail_start);
      tail_counted = lane >= vsplat_i<W>(static_cast<int32_t>(W - rem));
    } else {
      alignas(64) float padded[W];
      for (int i = 0; i < W; ++i) padded[i] = i < C ? static_cast<float>(src[i]) : -inf;
      tail = vload<W>(padded);
      tail_counted = lane < vsplat_i<W>(static_cast<int32_t>(C));
    }
    if (label >= tail_start) {
      tail_label = lane == vsplat_i<W>(static_cast<int32_t>(label - tail_start));
    }
  }

  // Pass 1: the largest other logit and finiteness (x - x is NaN exactly for NaN and +-inf); two
  // accumulators so that the maximum's latency does not bound the loop.
  F mx0 = ninf, mx1 = ninf, bad = zero;
  int64_t j = 0;
  for (; j + 2 * W <= full; j += 2 * W) {
    F a = load_logits(src + j), b = load_logits(src + j + W);
    if constexpr (kWiden) {
      vstore<W>(buf + j, a);
      vstore<W>(buf + j + W, b);
    }
    bad += (a - a) + (b - b);
    if (j == label_chunk) a = vselect<W>(lane == label_lane, ninf, a);
    if (j + W == label_chunk) b = vselect<W>(lane == label_lane, ninf, b);
    mx0 = vmax<W>(mx0, a);
    mx1 = vmax<W>(mx1, b);
  }
  for (; j < full; j += W) {
    F a = load_logits(src + j);
    if constexpr (kWiden) vstore<W>(buf + j, a);
    bad += a - a;
    if (j == label_chunk) a = vselect<W>(lane == label_lane, ninf, a);
    mx0 = vmax<W>(mx0, a);
  }
  if (rem) {
    if constexpr (kWiden) {
      if (C >= W) {
        vstore<W>(buf + tail_start, tail);
      } else {
        for (int64_t k = 0; k < C; ++k) buf[k] = tail[k];
      }
    }
    bad += vselect<W>(tail_counted, tail - tail, zero);  // -inf padding is not a logit
    mx0 = vmax<W>(mx0, vselect<W>(tail_label, ninf, tail));
  }
  const float* v = kWiden ? buf : reinterpret_cast<const float*>(src);  // the row in float32
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
  F s1 = zero, s2 = zero;
  const F mv = vsplat<W>(m);
  for (j = 0; j < full; j += W) {
    F e = vexp_nonpositive<W>(vload<W>(v + j) - mv);
    if (j == label_chunk) e = vselect<W>(lane == label_lane, zero, e);
    s1 += e;
    s2 += e * e;
  }
  if (rem) {
    const F e = vselect<W>(tail_counted & ~tail_label, vexp_nonpositive<W>(tail - mv), zero);
    s1 += e;
    s2 += e * e;
  }
  return finish_row(true, m, hsum<W>(s1), hsum<W>(s2), xy, maxother, correct);
}

// Rows [begin, end): the path's entry point; `buf` holds C floats (unused for float32 logits).
template <typename T>
EASYHARD_PATH_TARGET void rows(const T* base, int64_t begin, int64_t end, int64_t C,
                               const int64_t* lab, RowStats* out, float* buf) {
  for (int64_t i = begin; i < end; ++i) out[i] = row_stats(base + i * C, C, lab[i], buf);
}

}  // namespace
}  // namespace EASYHARD_PATH
}  // namespace easyhard
