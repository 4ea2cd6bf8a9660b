// Selective-scan kernels compiled for the generic instruction set (256-bit vectors).

#define SMDIM_VEC_BYTES 32
#define SMDIM_ISA isa_generic
#include "scan_kernel.h"

namespace smdim {
const ScanKernelTable& scan_kernels_generic() { return isa_generic::make_table("generic"); }
}  // namespace smdim
