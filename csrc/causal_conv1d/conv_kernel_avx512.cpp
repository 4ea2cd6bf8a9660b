// Causal conv1d row kernels compiled for the avx512 instruction set (512-bit vectors).
#pragma GCC target("avx512f,avx512dq,avx512vl,avx512bw,avx2,fma")
#define SMDIM_VEC_BYTES 64
#define SMDIM_ISA isa_conv_avx512
#include "conv_kernel.h"

namespace smdim {
const ConvKernelTable& conv_kernels_avx512() { return isa_conv_avx512::make_conv_table("avx512"); }
}  // namespace smdim
