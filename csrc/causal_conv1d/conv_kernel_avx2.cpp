// Causal conv1d row kernels compiled for the avx2 instruction set (256-bit vectors, FMA).
#pragma GCC target("avx2,fma")
#define SMDIM_VEC_BYTES 32
#define SMDIM_ISA isa_conv_avx2
#include "conv_kernel.h"

namespace smdim {
const ConvKernelTable& conv_kernels_avx2() { return isa_conv_avx2::make_conv_table("avx2"); }
}  // namespace smdim
