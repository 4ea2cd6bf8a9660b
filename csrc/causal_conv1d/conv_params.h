// Plain-data description of one causal conv1d call, shared by the ATen glue (causal_conv1d.cpp)
// and the per-ISA row kernels (conv_kernel.h), which must not see ATen headers. Rows are the
// (batch, channel) pairs of contiguous (batch, dim, len) tensors, in the compute dtype.
#pragma once

#include <cstdint>

namespace smdim {

struct ConvRows {
  int64_t dim = 0, len = 0, width = 0;
  bool silu = false, reverse = false;
  const void* x = nullptr;     // (batch, dim, len)
  const void* w = nullptr;     // (dim, width)
  const void* bias = nullptr;  // (dim,), zeros when the op has none
  const void* dout = nullptr;  // backward: (batch, dim, len), the gradient of the output
  void* out = nullptr;         // forward: (batch, dim, len)
  void* dx = nullptr;          // backward: (batch, dim, len)
  void* dw = nullptr;          // backward: (batch, dim, width), per-row partials
  void* db = nullptr;          // backward: (batch, dim), per-row partials
};

// One entry point set per ISA and dtype over rows [begin, end).
struct ConvKernelTable {
  const char* isa;
  void (*fwd_f32)(const ConvRows&, int64_t, int64_t);
  void (*fwd_f64)(const ConvRows&, int64_t, int64_t);
  void (*bwd_f32)(const ConvRows&, int64_t, int64_t);
  void (*bwd_f64)(const ConvRows&, int64_t, int64_t);
};

const ConvKernelTable& conv_kernels_generic();
const ConvKernelTable& conv_kernels_avx2();
const ConvKernelTable& conv_kernels_avx512();

}  // namespace smdim
