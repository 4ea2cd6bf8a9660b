// Selective-scan kernels compiled for the avx2 instruction set (256-bit vectors).
#pragma GCC target("avx2,fma")
#define SMDIM_VEC_BYTES 32
#define SMDIM_ISA isa_avx2
#include "scan_kernel.h"

namespace smdim {
const ScanKernelTable& scan_kernels_avx2() { return isa_avx2::make_table("avx2"); }
}  // namespace smdim
