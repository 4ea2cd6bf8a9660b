// Causal conv1d row kernels for the generic x86-64 baseline (16-byte vectors: wider ones lower
// poorly to SSE2).
#define SMDIM_VEC_BYTES 16
#define SMDIM_ISA isa_conv_generic
#include "conv_kernel.h"

namespace smdim {
const ConvKernelTable& conv_kernels_generic() { return isa_conv_generic::make_conv_table("generic"); }
}  // namespace smdim
