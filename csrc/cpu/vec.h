// Explicit SIMD for the CPU kernels, written once with GCC/Clang vector extensions and compiled
// for several instruction sets (see cpu_capability.h): Vec<W> is W float lanes (W = 16 in the
// AVX-512 path, 8 in AVX2, 4 in the baseline: SSE2 on x86-64, NEON on aarch64). Why not rely on
// the auto-vectoriser: GCC 12 turned the branch-free exp of the earlier kernel back into branches
// under AVX2 (not under AVX-512, where masking is cheap) and left the loop scalar, 8x slower.
//
// Every function is always_inline and has internal linkage, so it is compiled inside the
// target-specific function that calls it and no copy for another instruction set can be picked by
// the linker. Include this header from one translation unit only (csrc/cpu/accumulate_stats.cpp).
#pragma once

#include <cstdint>
#include <cstring>

#define EASYHARD_VEC_INLINE inline __attribute__((always_inline))

// Vec<W> values are passed only between always_inline functions, never across a call boundary
// compiled for another instruction set: the ABI note GCC gives for wide vectors does not apply.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace easyhard {
namespace {

template <int W>
struct Vec {
  typedef float F __attribute__((vector_size(4 * W)));
  typedef int32_t I __attribute__((vector_size(4 * W)));
  typedef uint16_t H __attribute__((vector_size(2 * W)));
};

template <int W>
EASYHARD_VEC_INLINE typename Vec<W>::F vload(const float* p) {
  typename Vec<W>::F v;
  std::memcpy(&v, p, sizeof(v));  // an unaligned vector load
  return v;
}

template <int W>
EASYHARD_VEC_INLINE void vstore(float* p, typename Vec<W>::F v) {
  std::memcpy(p, &v, sizeof(v));  // an unaligned vector store
}

template <int W>
EASYHARD_VEC_INLINE typename Vec<W>::F vsplat(float x) {
  return typename Vec<W>::F{} + x;
}

template <int W>
EASYHARD_VEC_INLINE typename Vec<W>::I vsplat_i(int32_t x) {
  return typename Vec<W>::I{} + x;
}

template <int W>
EASYHARD_VEC_INLINE typename Vec<W>::I viota() {
  typename Vec<W>::I v;
  for (int i = 0; i < W; ++i) v[i] = i;
  return v;
}

// Lanes where mask is all ones take a, the others b (mask: the result of a vector comparison).
template <int W>
EASYHARD_VEC_INLINE typename Vec<W>::F vselect(typename Vec<W>::I mask, typename Vec<W>::F a,
                                               typename Vec<W>::F b) {
  typedef typename Vec<W>::I I;
  typedef typename Vec<W>::F F;
  return reinterpret_cast<F>((reinterpret_cast<I>(a) & mask) | (reinterpret_cast<I>(b) & ~mask));
}

// Lane-wise maximum (vmaxps on x86, fmax on NEON); a NaN in b may be dropped, which the kernels
// never depend on (they test finiteness separately).
template <int W>
EASYHARD_VEC_INLINE typename Vec<W>::F vmax(typename Vec<W>::F a, typename Vec<W>::F b) {
#if defined(__clang__)
  return __builtin_elementwise_max(a, b);
#else
  return a > b ? a : b;
#endif
}

template <int W>
EASYHARD_VEC_INLINE float hmax(typename Vec<W>::F v) {
  float m = v[0];
  for (int i = 1; i < W; ++i) m = v[i] > m ? v[i] : m;
  return m;
}

template <int W>
EASYHARD_VEC_INLINE float hsum(typename Vec<W>::F v) {
  // pairwise, so the rounding does not depend on the order of W serial additions
  for (int half = W / 2; half >= 1; half /= 2) {
    for (int i = 0; i < half; ++i) v[i] += v[i + half];
  }
  return v[0];
}

// exp(x) for x <= 0 (Cephes-style: n = round(x / ln 2), a degree-6 polynomial of the remainder,
// 2^n by building the exponent bits; about 1 ulp). Lanes below -87 flush to exactly 0 (expf
// underflows to denormals there), -inf and NaN padding included; results are never above 1.
template <int W>
EASYHARD_VEC_INLINE typename Vec<W>::F vexp_nonpositive(typename Vec<W>::F x) {
  typedef typename Vec<W>::F F;
  typedef typename Vec<W>::I I;
  const F lo = vsplat<W>(-87.f);
  const I keep = x >= lo;  // false for NaN and everything below -87
  const F xc = vmax<W>(x, lo);
  const F shifted = xc * 1.44269504088896341f + 12582912.f;  // round to nearest: 1.5 * 2^23
  const F n = shifted - 12582912.f;
  const F r = (xc - n * 0.693359375f) + n * 2.12194440e-4f;
  F p = vsplat<W>(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  const I bits = (__builtin_convertvector(n, I) + 127) << 23;
  const F e = p * reinterpret_cast<F>(bits);
  return reinterpret_cast<F>(reinterpret_cast<I>(e) & keep);
}

// bfloat16 bits (uint16) to float: the upper half of the float's bits.
template <int W>
EASYHARD_VEC_INLINE typename Vec<W>::F vload_bf16(const uint16_t* p) {
  typename Vec<W>::H h;
  std::memcpy(&h, p, sizeof(h));
  auto wide = __builtin_convertvector(h, typename Vec<W>::I) << 16;
  return reinterpret_cast<typename Vec<W>::F>(wide);
}

// IEEE half bits (uint16) to float, exact for every value (zeros, subnormals, inf, NaN), without
// F16C: move the exponent and mantissa into place and fix up the exponent's special cases.
template <int W>
EASYHARD_VEC_INLINE typename Vec<W>::F vload_f16_bits(const uint16_t* p) {
  typedef typename Vec<W>::F F;
  typedef typename Vec<W>::I I;
  typename Vec<W>::H h16;
  std::memcpy(&h16, p, sizeof(h16));
  const I h = __builtin_convertvector(h16, I);
  I o = (h & 0x7fff) << 13;
  const I exp = o & (0x7c00 << 13);
  o += (127 - 15) << 23;
  o += (exp == (0x7c00 << 13)) & ((128 - 16) << 23);  // inf / NaN
  const I sub = exp == 0;                             // zero / subnormal: renormalise
  o += sub & (1 << 23);
  const F magic = reinterpret_cast<F>(vsplat_i<W>(113 << 23));
  F f = reinterpret_cast<F>(o);
  f = vselect<W>(sub, f - magic, f);
  return reinterpret_cast<F>(reinterpret_cast<I>(f) | ((h & 0x8000) << 16));
}

}  // namespace
}  // namespace easyhard
