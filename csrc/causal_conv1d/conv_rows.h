// Row kernels of the depthwise causal conv1d: one (batch, channel) row of L steps (SiLU and its
// derivative are applied by ATen's vectorised kernels in causal_conv1d.cpp).
// Defined in conv_rows.cpp with portable SIMD (no ATen there); called by causal_conv1d.cpp.
#pragma once

#include <cstdint>

namespace smdim {
namespace conv_rows {

// out[t] = bias + sum_k w[k] x[t - (width - 1) + k], zeros before t = 0; reverse (anti-causal, the
// same conv run right to left): out[t] = bias + sum_k w[k] x[t + (width - 1) - k], zeros past the end.
void forward(const float* x, const float* w, float bias, int64_t len, int64_t width, bool reverse, float* out);
void forward(const double* x, const double* w, double bias, int64_t len, int64_t width, bool reverse, double* out);

// Gradients of one row from the gradient of the pre-activation dpre (len): dx (len), dw (width),
// *db. Reductions use fixed-order lane partials (deterministic).
void backward(const float* x, const float* w, const float* dpre, int64_t len, int64_t width, bool reverse, float* dx,
              float* dw, float* db);
void backward(const double* x, const double* w, const double* dpre, int64_t len, int64_t width, bool reverse,
              double* dx, double* dw, double* db);

}  // namespace conv_rows
}  // namespace smdim
