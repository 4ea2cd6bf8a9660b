// Vectorised row kernels of the causal conv1d (see conv_rows.h). Portable: GCC vector
// extensions at the baseline instruction set (16-byte vectors: wider ones lower poorly to SSE2).
#define SMDIM_VEC_BYTES 16
#define SMDIM_ISA isa_conv_baseline
#include "../common/simd.h"
#include "conv_rows.h"

namespace smdim {
namespace conv_rows {
namespace {

using namespace isa_conv_baseline;

// The tap k reads x[t + offset(k)]: causal t - (width - 1 - k), anti-causal (Reverse) t + (width - 1 - k),
// the same conv run right to left (zeros past the end instead of before the start).
template <bool Reverse>
inline int64_t offset(int64_t k, int64_t width) {
  return Reverse ? width - 1 - k : k - (width - 1);
}

// pre-activation at t (scalar path for the rows' edges)
template <bool Reverse, typename T>
inline T pre_at(const T* x, const T* w, T bias, int64_t t, int64_t len, int64_t width) {
  T acc = bias;
  for (int64_t k = 0; k < width; ++k) {
    const int64_t src = t + offset<Reverse>(k, width);
    if (src >= 0 && src < len) acc += w[k] * x[src];
  }
  return acc;
}

// pre-activation of V consecutive steps starting at t, every tap in range
template <bool Reverse, typename T>
inline vec_t<T> pre_vec(const T* x, const T* w, T bias, int64_t t, int64_t width) {
  vec_t<T> acc = splat(bias);
  for (int64_t k = 0; k < width; ++k) acc += w[k] * load_unaligned(x + t + offset<Reverse>(k, width));
  return acc;
}

template <bool Reverse, typename T>
void forward_row(const T* x, const T* w, T bias, int64_t len, int64_t width, T* out) {
  constexpr int V = Vec<T>::width;
  // steps whose taps all lie inside the row: [width - 1, len) causal, [0, len - width + 1) anti-causal
  const int64_t lo = Reverse ? 0 : (width - 1 < len ? width - 1 : len);
  const int64_t hi = Reverse ? (len - (width - 1) > 0 ? len - (width - 1) : 0) : len;
  for (int64_t t = 0; t < lo; ++t) out[t] = pre_at<Reverse>(x, w, bias, t, len, width);
  int64_t t = lo;
  for (; t + V <= hi; t += V) store_unaligned(out + t, pre_vec<Reverse>(x, w, bias, t, width));
  for (; t < len; ++t) out[t] = pre_at<Reverse>(x, w, bias, t, len, width);
}

// sum_t a[t] * b[t] with V lane partials, summed in a fixed order
template <typename T>
inline T dot(const T* a, const T* b, int64_t n) {
  constexpr int V = Vec<T>::width;
  vec_t<T> acc = splat(T(0));
  int64_t i = 0;
  for (; i + V <= n; i += V) acc += load_unaligned(a + i) * load_unaligned(b + i);
  T total = 0;
  for (int j = 0; j < V; ++j) total += acc[j];
  for (; i < n; ++i) total += a[i] * b[i];
  return total;
}

template <bool Reverse, typename T>
void backward_row(const T* x, const T* w, const T* dpre, int64_t len, int64_t width, T* dx, T* dw, T* db) {
  constexpr int V = Vec<T>::width;
  // dx[s] = sum_k w[k] dpre[s - offset_k] (the steps whose tap k read x[s]), terms outside the row dropped
  auto dx_at = [&](int64_t s) {
    T acc = 0;
    for (int64_t k = 0; k < width; ++k) {
      const int64_t t = s - offset<Reverse>(k, width);
      if (t >= 0 && t < len) acc += w[k] * dpre[t];
    }
    return acc;
  };
  const int64_t lo = Reverse ? (width - 1 < len ? width - 1 : len) : 0;
  const int64_t hi = Reverse ? len : (len - (width - 1) > 0 ? len - (width - 1) : 0);
  for (int64_t s = 0; s < lo; ++s) dx[s] = dx_at(s);
  int64_t s = lo;
  for (; s + V <= hi; s += V) {
    vec_t<T> acc = splat(T(0));
    for (int64_t k = 0; k < width; ++k) acc += w[k] * load_unaligned(dpre + s - offset<Reverse>(k, width));
    store_unaligned(dx + s, acc);
  }
  for (; s < len; ++s) dx[s] = dx_at(s);
  // dw[k] = sum_t dpre[t] x[t + offset_k] over the steps where that tap is in range; db = sum_t dpre[t]
  for (int64_t k = 0; k < width; ++k) {
    const int64_t shift = width - 1 - k;
    if (shift >= len) dw[k] = T(0);
    else dw[k] = Reverse ? dot(dpre, x + shift, len - shift) : dot(dpre + shift, x, len - shift);
  }
  vec_t<T> acc = splat(T(0));
  int64_t i = 0;
  for (; i + V <= len; i += V) acc += load_unaligned(dpre + i);
  T total = 0;
  for (int j = 0; j < V; ++j) total += acc[j];
  for (; i < len; ++i) total += dpre[i];
  *db = total;
}

}  // namespace

void forward(const float* x, const float* w, float bias, int64_t len, int64_t width, bool reverse, float* out) {
  reverse ? forward_row<true>(x, w, bias, len, width, out) : forward_row<false>(x, w, bias, len, width, out);
}
void forward(const double* x, const double* w, double bias, int64_t len, int64_t width, bool reverse, double* out) {
  reverse ? forward_row<true>(x, w, bias, len, width, out) : forward_row<false>(x, w, bias, len, width, out);
}
void backward(const float* x, const float* w, const float* dpre, int64_t len, int64_t width, bool reverse, float* dx,
              float* dw, float* db) {
  reverse ? backward_row<true>(x, w, dpre, len, width, dx, dw, db)
          : backward_row<false>(x, w, dpre, len, width, dx, dw, db);
}
void backward(const double* x, const double* w, const double* dpre, int64_t len, int64_t width, bool reverse,
              double* dx, double* dw, double* db) {
  reverse ? backward_row<true>(x, w, dpre, len, width, dx, dw, db)
          : backward_row<false>(x, w, dpre, len, width, dx, dw, db);
}

}  // namespace conv_rows
}  // namespace smdim
