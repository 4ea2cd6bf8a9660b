// Causal conv1d CPU row kernels with the SiLU fused, written once and compiled per ISA (see
// conv_kernel_*.cpp). One (batch, channel) row of `len` contiguous steps at a time, vectorised
// over time; the row's intermediate (pre-activation, its gradient) stays in cache between the
// passes over it instead of going through memory as separate ATen ops.
#pragma once

#include <cstdlib>
#include <cstring>

#include "../common/simd.h"
#include "conv_params.h"

namespace smdim {
namespace SMDIM_ISA {

// Nothing here instantiates a std template: identical instantiations from differently targeted
// units would be merged by the linker (see scan_kernel.h).

// The tap k reads x[t + tap_offset(k)]: causal t - (width - 1 - k); anti-causal (Reverse, the same
// conv run right to left) t + (width - 1 - k), zeros past the end instead of before the start.
template <bool Reverse>
inline int64_t tap_offset(int64_t k, int64_t width) {
  return Reverse ? width - 1 - k : k - (width - 1);
}

// The steps [lo, hi) whose taps all lie inside the row.
template <bool Reverse>
inline void interior(int64_t len, int64_t width, int64_t* lo, int64_t* hi) {
  const int64_t inner = len - (width - 1) > 0 ? len - (width - 1) : 0;
  *lo = Reverse ? 0 : len - inner;
  *hi = Reverse ? inner : len;
}

template <typename T>
inline vec_t<T> load_part(const T* p, int64_t n) {
  vec_t<T> v{};
  std::memcpy(&v, p, n * sizeof(T));
  return v;
}

template <typename T>
inline void store_part(T* p, vec_t<T> v, int64_t n) {
  std::memcpy(p, &v, n * sizeof(T));
}

// f(t) for full vectors t = lo, lo + W, ... covering [lo, hi), the last one moved back to end at
// hi (it overlaps its predecessor: only for f that writes the same values twice); scalar(t) for
// every step when [lo, hi) is shorter than a vector.
template <typename T, typename Vector, typename Scalar>
inline void cover(int64_t lo, int64_t hi, Vector f, Scalar scalar) {
  constexpr int W = Vec<T>::width;
  if (hi - lo < W) {
    for (int64_t t = lo; t < hi; ++t) scalar(t);
    return;
  }
  for (int64_t t = lo;; t += W) {
    if (t + W > hi) t = hi - W;
    f(t);
    if (t + W >= hi) break;
  }
}

// Pre-activation at t (the edges: taps outside the row read zeros).
template <bool Reverse, typename T>
inline T pre_at(const T* x, const T* w, T bias, int64_t t, int64_t len, int64_t width) {
  T acc = bias;
  for (int64_t k = 0; k < width; ++k) {
    const int64_t src = t + tap_offset<Reverse>(k, width);
    if (src >= 0 && src < len) acc += w[k] * x[src];
  }
  return acc;
}

template <bool Reverse, typename T>
inline void pre_activation(const T* x, const T* w, T bias, int64_t len, int64_t width, T* out) {
  int64_t lo, hi;
  interior<Reverse>(len, width, &lo, &hi);
  auto edge = [&](int64_t t) { out[t] = pre_at<Reverse>(x, w, bias, t, len, width); };
  for (int64_t t = 0; t < lo; ++t) edge(t);
  for (int64_t t = hi; t < len; ++t) edge(t);
  cover<T>(lo, hi, [&](int64_t t) {
    vec_t<T> acc = splat(bias);
    for (int64_t k = 0; k < width; ++k) acc += w[k] * load_unaligned(x + t + tap_offset<Reverse>(k, width));
    store_unaligned(out + t, acc);
  }, edge);
}

// f(t, lanes) over [0, len) in vectors, the last one partial.
template <typename T, typename F>
inline void each_vector(int64_t len, F f) {
  constexpr int W = Vec<T>::width;
  for (int64_t t = 0; t < len; t += W) f(t, len - t < W ? len - t : int64_t(W));
}

template <bool Reverse, typename T>
void forward_row(const T* x, const T* w, T bias, int64_t len, int64_t width, bool silu, T* out) {
  pre_activation<Reverse>(x, w, bias, len, width, out);
  if (!silu) return;
  each_vector<T>(len, [&](int64_t t, int64_t n) {
    const vec_t<T> p = load_part(out + t, n);
    store_part(out + t, p * sigmoid<T>(p), n);
  });
}

// sum_t a[t] * b[t] with W lane partials, summed in a fixed order
template <typename T>
inline T dot(const T* a, const T* b, int64_t n) {
  constexpr int W = Vec<T>::width;
  vec_t<T> acc = splat(T(0));
  int64_t i = 0;
  for (; i + W <= n; i += W) acc += load_unaligned(a + i) * load_unaligned(b + i);
  T total = 0;
  for (int j = 0; j < W; ++j) total += acc[j];
  for (; i < n; ++i) total += a[i] * b[i];
  return total;
}

// Gradients of one row from the output's gradient g: dx (len), dw (width), *db. With SiLU the
// pre-activation is recomputed into `scratch` (len), then replaced there by its gradient.
template <bool Reverse, typename T>
void backward_row(const T* x, const T* w, T bias, const T* g, int64_t len, int64_t width, bool silu, T* scratch,
                  T* dx, T* dw, T* db) {
  const T* dpre = g;
  if (silu) {
    pre_activation<Reverse>(x, w, bias, len, width, scratch);
    each_vector<T>(len, [&](int64_t t, int64_t n) {
      const vec_t<T> p = load_part(scratch + t, n), s = sigmoid<T>(p);
      store_part(scratch + t, load_part(g + t, n) * s * (T(1) + p * (T(1) - s)), n);
    });
    dpre = scratch;
  }
  // dx[s] = sum_k w[k] dpre[s - tap_offset(k)] (the steps whose tap k read x[s]), terms outside the row dropped
  auto dx_at = [&](int64_t s) {
    T acc = 0;
    for (int64_t k = 0; k < width; ++k) {
      const int64_t t = s - tap_offset<Reverse>(k, width);
      if (t >= 0 && t < len) acc += w[k] * dpre[t];
    }
    dx[s] = acc;
  };
  int64_t lo, hi;
  interior<!Reverse>(len, width, &lo, &hi);  // the steps all of whose readers lie inside the row
  for (int64_t s = 0; s < lo; ++s) dx_at(s);
  for (int64_t s = hi; s < len; ++s) dx_at(s);
  cover<T>(lo, hi, [&](int64_t s) {
    vec_t<T> acc = splat(T(0));
    for (int64_t k = 0; k < width; ++k) acc += w[k] * load_unaligned(dpre + s - tap_offset<Reverse>(k, width));
    store_unaligned(dx + s, acc);
  }, dx_at);
  // dw[k] = sum_t dpre[t] x[t + tap_offset(k)] over the steps where that tap is in range; db = sum_t dpre[t]
  for (int64_t k = 0; k < width; ++k) {
    const int64_t shift = width - 1 - k;
    if (shift >= len) dw[k] = T(0);
    else dw[k] = Reverse ? dot(dpre, x + shift, len - shift) : dot(dpre + shift, x, len - shift);
  }
  constexpr int W = Vec<T>::width;
  vec_t<T> acc = splat(T(0));
  int64_t i = 0;
  for (; i + W <= len; i += W) acc += load_unaligned(dpre + i);
  T total = 0;
  for (int j = 0; j < W; ++j) total += acc[j];
  for (; i < len; ++i) total += dpre[i];
  *db = total;
}

template <typename T>
void forward_rows(const ConvRows& c, int64_t begin, int64_t end) {
  const T* x = static_cast<const T*>(c.x);
  const T* w = static_cast<const T*>(c.w);
  const T* bias = static_cast<const T*>(c.bias);
  T* out = static_cast<T*>(c.out);
  for (int64_t row = begin; row < end; ++row) {
    const int64_t d = row % c.dim, at = row * c.len;
    if (c.reverse) forward_row<true>(x + at, w + d * c.width, bias[d], c.len, c.width, c.silu, out + at);
    else forward_row<false>(x + at, w + d * c.width, bias[d], c.len, c.width, c.silu, out + at);
  }
}

template <typename T>
void backward_rows(const ConvRows& c, int64_t begin, int64_t end) {
  const T* x = static_cast<const T*>(c.x);
  const T* w = static_cast<const T*>(c.w);
  const T* bias = static_cast<const T*>(c.bias);
  const T* g = static_cast<const T*>(c.dout);
  T* dx = static_cast<T*>(c.dx);
  T* dw = static_cast<T*>(c.dw);
  T* db = static_cast<T*>(c.db);
  T* scratch = nullptr;
  if (c.silu && c.len > 0) {
    scratch = static_cast<T*>(std::malloc(c.len * sizeof(T)));
    if (scratch == nullptr) std::abort();
  }
  for (int64_t row = begin; row < end; ++row) {
    const int64_t d = row % c.dim, at = row * c.len;
    if (c.reverse)
      backward_row<true>(x + at, w + d * c.width, bias[d], g + at, c.len, c.width, c.silu, scratch, dx + at,
                         dw + row * c.width, db + row);
    else
      backward_row<false>(x + at, w + d * c.width, bias[d], g + at, c.len, c.width, c.silu, scratch, dx + at,
                          dw + row * c.width, db + row);
  }
  std::free(scratch);
}

inline const ConvKernelTable& make_conv_table(const char* isa) {
  static const ConvKernelTable table = {isa, &forward_rows<float>, &forward_rows<double>, &backward_rows<float>,
                                        &backward_rows<double>};
  return table;
}

}  // namespace SMDIM_ISA
}  // namespace smdim
