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

// pre-activation at t (scalar path for the head and tail of a row)
template <typename T>
inline T pre_at(const T* x, const T* w, T bias, int64_t t, int64_t width) {
  T acc = bias;
  for (int64_t k = 0; k < width; ++k) {
    const int64_t src = t - (width - 1) + k;
    if (src >= 0) acc += w[k] * x[src];
  }
  return acc;
}

// pre-activation of V consecutive steps starting at t >= width - 1
template <typename T>
inline vec_t<T> pre_vec(const T* x, const T* w, T bias, int64_t t, int64_t width) {
  vec_t<T> acc = splat(bias);
  for (int64_t k = 0; k < width; ++k) acc += w[k] * load_unaligned(x + t - (width - 1) + k);
  return acc;
}

template <typename T>
void forward_row(const T* x, const T* w, T bias, int64_t len, int64_t width, T* out) {
  constexpr int V = Vec<T>::width;
  const int64_t head = width - 1 < len ? width - 1 : len;
  for (int64_t t = 0; t < head; ++t) out[t] = pre_at(x, w, bias, t, width);
  int64_t t = head;
  for (; t + V <= len; t += V) store_unaligned(out + t, pre_vec(x, w, bias, t, width));
  for (; t < len; ++t) out[t] = pre_at(x, w, bias, t, width);
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

template <typename T>
void backward_row(const T* x, const T* w, const T* dpre, int64_t len, int64_t width, T* dx, T* dw, T* db) {
  constexpr int V = Vec<T>::width;
  // dx[s] = sum_k w[k] dpre[s + shift_k], shift_k = width - 1 - k, terms past the end dropped
  int64_t s = 0;
  for (; s + V + width - 1 <= len; s += V) {
    vec_t<T> acc = splat(T(0));
    for (int64_t k = 0; k < width; ++k) acc += w[k] * load_unaligned(dpre + s + (width - 1 - k));
    store_unaligned(dx + s, acc);
  }
  for (; s < len; ++s) {
    T acc = 0;
    for (int64_t k = 0; k < width; ++k) {
      const int64_t t = s + (width - 1 - k);
      if (t < len) acc += w[k] * dpre[t];
    }
    dx[s] = acc;
  }
  // dw[k] = sum_t dpre[t] x[t - shift_k]; db = sum_t dpre[t]
  for (int64_t k = 0; k < width; ++k) {
    const int64_t shift = width - 1 - k;
    dw[k] = shift < len ? dot(dpre + shift, x, len - shift) : T(0);
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

void forward(const float* x, const float* w, float bias, int64_t len, int64_t width, float* out) {
  forward_row<float>(x, w, bias, len, width, out);
}
void forward(const double* x, const double* w, double bias, int64_t len, int64_t width, double* out) {
  forward_row<double>(x, w, bias, len, width, out);
}
void backward(const float* x, const float* w, const float* dpre, int64_t len, int64_t width, float* dx, float* dw,
              float* db) {
  backward_row<float>(x, w, dpre, len, width, dx, dw, db);
}
void backward(const double* x, const double* w, const double* dpre, int64_t len, int64_t width, double* dx,
              double* dw, double* db) {
  backward_row<double>(x, w, dpre, len, width, dx, dw, db);
}

}  // namespace conv_rows
}  // namespace smdim
