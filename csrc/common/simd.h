// Portable fixed-width SIMD helpers on GCC/Clang vector extensions.
//
// This header is included by translation units compiled for one instruction set each
// (generic, AVX2+FMA, AVX-512); every such unit defines SMDIM_VEC_BYTES and SMDIM_ISA
// (a namespace name) first, so the inline functions below never collide across ISAs.
// It must not include ATen or any header that instantiates code for the default target.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#ifndef SMDIM_VEC_BYTES
#error "define SMDIM_VEC_BYTES before including simd.h"
#endif
#ifndef SMDIM_ISA
#error "define SMDIM_ISA before including simd.h"
#endif
#if SMDIM_VEC_BYTES == 64 && defined(__x86_64__)
#include <immintrin.h>
#endif

namespace smdim {
namespace SMDIM_ISA {

template <typename T>
struct Vec;

template <>
struct Vec<float> {
  typedef float type __attribute__((vector_size(SMDIM_VEC_BYTES)));
  typedef int32_t itype __attribute__((vector_size(SMDIM_VEC_BYTES)));
  typedef int32_t index;  // element type of itype (shuffle indices)
  static constexpr int width = SMDIM_VEC_BYTES / 4;
};

template <>
struct Vec<double> {
  typedef double type __attribute__((vector_size(SMDIM_VEC_BYTES)));
  typedef int64_t itype __attribute__((vector_size(SMDIM_VEC_BYTES)));
  typedef int64_t index;
  static constexpr int width = SMDIM_VEC_BYTES / 8;
};

template <typename T>
using vec_t = typename Vec<T>::type;

// Broadcast. (x - 0 is an exact identity, unlike x + 0 for x = -0, so it compiles to a
// bare broadcast.)
template <typename T>
inline vec_t<T> splat(T x) {
  return x - vec_t<T>{};
}

// 2^x for fp32 lanes: round-to-nearest split x = n + f, |f| <= 1/2, Taylor series of
// e^(f ln 2) to degree 6 (relative error < 2e-7), then scaled by 2^n so that overflow gives
// +inf and underflow flushes smoothly to 0. NaN lanes stay NaN.
inline vec_t<float> exp2_poly(vec_t<float> f) {
  const float l = 0.69314718055994531f;
  vec_t<float> p = splat(l * l * l * l * l * l / 720.0f);
  p = p * f + l * l * l * l * l / 120.0f;
  p = p * f + l * l * l * l / 24.0f;
  p = p * f + l * l * l / 6.0f;
  p = p * f + l * l / 2.0f;
  p = p * f + l;
  return p * f + 1.0f;
}
#if SMDIM_VEC_BYTES == 64 && defined(__x86_64__)
// AVX-512 (the 64-byte unit is compiled under GCC's avx512f target pragma): the clamps as min/max
// (NaN passes through as the second operand), the rounding as one vrndscaleps and the 2^n scaling
// as one vscalefps (exact, handles under- and overflow): about half the instructions of the portable version below, in the scan's innermost loop.
inline vec_t<float> exp2_fast(vec_t<float> x) {
  const __m512 t = _mm512_min_ps(_mm512_set1_ps(128.0f), _mm512_max_ps(_mm512_set1_ps(-150.0f), (__m512)x));
  const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const vec_t<float> p = exp2_poly((vec_t<float>)_mm512_sub_ps(t, n));
  return (vec_t<float>)_mm512_scalef_ps((__m512)p, n);
}
#else
inline vec_t<float> exp2_fast(vec_t<float> x) {
  using V = vec_t<float>;
  using I = Vec<float>::itype;
  V t = x < -150.0f ? splat(-150.0f) : x;
  t = t > 128.0f ? splat(128.0f) : t;
  const float round_magic = 12582912.0f;  // 1.5 * 2^23
  V n = (t + round_magic) - round_magic;
  V p = exp2_poly(t - n);
  // 2^n in two steps (2^n alone overflows the exponent field for n = 128 or below -126)
  I ni = __builtin_convertvector(n, I);
  I n1 = ni >> 1;
  I n2 = ni - n1;
  V s1 = (V)((n1 + 127) << 23);
  V s2 = (V)((n2 + 127) << 23);
  V r = p * s1 * s2;
  return x != x ? x : r;
}
#endif
inline vec_t<double> exp2_fast(vec_t<double> x) {
  vec_t<double> r;
  for (int i = 0; i < Vec<double>::width; ++i) r[i] = std::exp2(x[i]);
  return r;
}

template <typename T>
inline vec_t<T> load_unaligned(const T* p) {
  vec_t<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T>
inline void store_unaligned(T* p, vec_t<T> v) {
  std::memcpy(p, &v, sizeof(v));
}

// Compile-time shuffle masks (index vectors for two-input shuffles), one pair per level k.
template <typename Index, int W, int K>
struct TransposeMasks {  // swap the off-diagonal K x K sub-blocks of each 2K x 2K block
  Index first[W], second[W];
  constexpr TransposeMasks() : first(), second() {
    for (int p = 0; p < W; ++p) {
      first[p] = (p & K) ? W + p - K : p;
      second[p] = (p & K) ? W + p : p + K;
    }
  }
};

template <typename Index, int W, int K>
struct HalvingMasks {  // blocks of 2K of (x, y) -> blocks of K: even from x, odd from y, both halves
  Index first[W], second[W];
  constexpr HalvingMasks() : first(), second() {
    for (int p = 0; p < W; ++p) {
      const int q = p / K, o = p % K, r = q / 2;
      first[p] = (q % 2 ? W : 0) + r * 2 * K + o;
      second[p] = first[p] + K;
    }
  }
};

template <typename T, typename Masks>
__attribute__((always_inline)) inline void shuffle_pair(vec_t<T> x, vec_t<T> y, vec_t<T>& first,
                                                        vec_t<T>& second) {
  using I = typename Vec<T>::itype;
  static constexpr Masks masks{};
  I m1, m2;
  std::memcpy(&m1, masks.first, sizeof(I));
  std::memcpy(&m2, masks.second, sizeof(I));
#if defined(__clang__)
  for (int p = 0; p < Vec<T>::width; ++p) {
    first[p] = m1[p] < Vec<T>::width ? x[m1[p]] : y[m1[p] - Vec<T>::width];
    second[p] = m2[p] < Vec<T>::width ? x[m2[p]] : y[m2[p] - Vec<T>::width];
  }
#else
  first = __builtin_shuffle(x, y, m1);
  second = __builtin_shuffle(x, y, m2);
#endif
}

template <typename T, int K>
__attribute__((always_inline)) inline void transpose_levels(vec_t<T>* rows) {
  constexpr int W = Vec<T>::width;
  using Index = typename Vec<T>::index;
  for (int i = 0; i < W; ++i) {
    if (i & K) continue;
    vec_t<T> a, b;
    shuffle_pair<T, TransposeMasks<Index, W, K>>(rows[i], rows[i + K], a, b);
    rows[i] = a;
    rows[i + K] = b;
  }
  if constexpr (K > 1) transpose_levels<T, K / 2>(rows);
}

// In-register transpose of a width x width block: rows[i][j] <-> rows[j][i]. Each level K
// swaps the off-diagonal K x K sub-blocks of every 2K x 2K block with two-input shuffles.
template <typename T>
__attribute__((always_inline)) inline void transpose_square(vec_t<T>* rows) {
  transpose_levels<T, Vec<T>::width / 2>(rows);
}

template <typename T, int K>
__attribute__((always_inline)) inline void halving_levels(vec_t<T>* work) {
  constexpr int W = Vec<T>::width;
  using Index = typename Vec<T>::index;
  for (int i = 0; i < K; ++i) {
    vec_t<T> a, b;
    shuffle_pair<T, HalvingMasks<Index, W, K>>(work[i], work[i + K], a, b);
    work[i] = a + b;
  }
  if constexpr (K > 1) halving_levels<T, K / 2>(work);
}

// Lane sums of `width` vectors at once: result lane j = sum of v[j]'s lanes. Each level
// halves the number of vectors, adding the two halves of every block of the pair it merges
// (2 shuffles + 1 add per merge), so W sums cost 3(W - 1) operations instead of W log W.
template <typename T>
inline vec_t<T> lane_sums(const vec_t<T>* v) {
  vec_t<T> work[Vec<T>::width];
  for (int i = 0; i < Vec<T>::width; ++i) work[i] = v[i];
  halving_levels<T, Vec<T>::width / 2>(work);
  return work[0];
}

constexpr double kLog2e = 1.4426950408889634;

template <typename T>
inline vec_t<T> exp_fast(vec_t<T> x) {
  return exp2_fast(x * static_cast<T>(kLog2e));
}

// log(1 + y) for fp32 lanes with y in [0, 1], as y * q(y): q = log1p(y)/y is smooth on
// [0, 1] and a degree-8 polynomial (a Chebyshev fit, refitted in powers of y) matches it to
// 1.5e-7 relative when evaluated in fp32 -- no division, and exact relative behaviour as y -> 0.
inline vec_t<float> log1p_unit(vec_t<float> y) {
  using V = vec_t<float>;
  V q = splat(0.005253457929939032f);
  q = q * y + -0.02958850748836994f;
  q = q * y + 0.07836166769266129f;
  q = q * y + -0.13674770295619965f;
  q = q * y + 0.19111430644989014f;
  q = q * y + -0.24844369292259216f;
  q = q * y + 0.33319270610809326f;
  q = q * y + -0.49999502301216125f;
  q = q * y + 1.0f;
  return y * q;
}

inline vec_t<double> log1p_unit(vec_t<double> y) {
  vec_t<double> r;
  for (int i = 0; i < Vec<double>::width; ++i) r[i] = std::log1p(y[i]);
  return r;
}

// softplus(x) = max(x, 0) + log1p(exp(-|x|)); equals log1p(exp(x)) without overflow.
template <typename T>
inline vec_t<T> softplus(vec_t<T> x) {
  using V = vec_t<T>;
  V ax = x < T(0) ? -x : x;
  V pos = x > T(0) ? x : splat(T(0));
  V r = pos + log1p_unit(exp_fast<T>(-ax));
  return x != x ? x : r;
}

template <typename T>
inline vec_t<T> sigmoid(vec_t<T> x) {
  return T(1) / (T(1) + exp_fast<T>(-x));
}

}  // namespace SMDIM_ISA
}  // namespace smdim
