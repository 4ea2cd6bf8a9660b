// Plain-data description of one selective-scan call, shared by the ATen glue and the
// per-ISA kernels (which must not see ATen headers). All tensors are contiguous and in
// the compute dtype (float or double) unless stated otherwise.
#pragma once

#include <cstdint>

namespace smdim {

// Time steps per checkpoint / per tile; the backward re-runs one chunk at a time. These two are
// also smdim_kernels/ops/selective_scan/constants.py's: the build reports them
// (smdim_native::scan_constants) and Python refuses a build whose values differ.
constexpr int64_t kScanChunk = 64;
// The largest state size N.
constexpr int64_t kMaxDstate = 256;
// Backward splits each group's channel blocks into fixed slots; the per-slot partial sums of
// input-dependent dB/dC keep results independent of threads. Slots per group: enough that the
// backward has kScanUnits units (batch x groups x slots) for that many threads, at least
// kScanMinSlots, at most kScanMaxSlots (and never more than the group's channel blocks).
constexpr int64_t kScanMaxSlots = 16;
constexpr int64_t kScanMinSlots = 4;
constexpr int64_t kScanUnits = 16;

struct ScanShape {
  int64_t batch = 0, dim = 0, len = 0, dstate = 0;
  int64_t groups = 1;  // channel groups of the input-dependent B/C (1 if both constant)
  bool var_B = false, var_C = false;
  bool has_D = false, has_z = false, has_bias = false, softplus = false;
  bool has_init = false, has_seq = false, reverse = false;
  int64_t n_chunks = 0;
};

struct ScanInputs {
  const void* u = nullptr;      // (batch, dim, len)
  const void* delta = nullptr;  // (batch, dim, len)
  const void* A = nullptr;      // (dim, dstate)
  const void* B = nullptr;      // (dim, dstate) or time-major (batch, groups, len, dstate)
  const void* C = nullptr;      // (dim, dstate) or time-major (batch, groups, len, dstate)
  const void* D = nullptr;      // (dim,)
  const void* z = nullptr;      // (batch, dim, len)
  const void* bias = nullptr;   // (dim,)
  const void* init = nullptr;   // (batch, dim, dstate)
  const int64_t* seq = nullptr; // (batch, len)
};

struct ScanForwardOutputs {
  void* out = nullptr;    // (batch, dim, len)
  void* last = nullptr;   // (batch, dim, dstate)
  void* ckpt = nullptr;   // (batch, dim, n_chunks, dstate): state before each chunk; null: skip
};

struct ScanBackwardIO {
  const void* dout = nullptr;   // (batch, dim, len)
  const void* dlast = nullptr;  // (batch, dim, dstate) or null
  const void* ckpt = nullptr;   // from the forward
  void* du = nullptr;           // (batch, dim, len)
  void* ddelta = nullptr;       // (batch, dim, len)
  void* dz = nullptr;           // (batch, dim, len) or null
  void* dinit = nullptr;        // (batch, dim, dstate) or null
  // Per-batch partials, summed over batch by the caller:
  void* dA = nullptr;           // (batch, dim, dstate)
  void* dB_const = nullptr;     // (batch, dim, dstate) when B is constant
  void* dC_const = nullptr;     // (batch, dim, dstate) when C is constant
  void* dD = nullptr;           // (batch, dim) or null
  void* dbias = nullptr;        // (batch, dim) or null
  // Per-slot partials, summed over slots by the caller:
  void* dB_var = nullptr;       // (batch, groups, n_slots, len, dstate) when B varies
  void* dC_var = nullptr;       // (batch, groups, n_slots, len, dstate) when C varies
  int64_t n_slots = 1;
};

// Work decomposition shared by the glue (to size loops/buffers) and the kernels.
inline int64_t dims_per_group(const ScanShape& s) { return s.dim / s.groups; }
inline int64_t blocks_per_group(const ScanShape& s, int64_t width) {
  return (dims_per_group(s) + width - 1) / width;
}
// Every slot writes a (len, N) partial row set of dB/dC that the glue then sums, so no more slots
// than the threads need: the backward ~4 % faster with 8 slots at (batch, d_inner, L) = (2, 256, 512)
// and with 4 at (16, 256, 64) than with 16. Depends on the shape only: results stay deterministic.
inline int64_t slots_per_group(const ScanShape& s, int64_t width) {
  const int64_t blocks = blocks_per_group(s, width);
  const int64_t rows = s.batch * s.groups > 0 ? s.batch * s.groups : 1;
  int64_t slots = (kScanUnits + rows - 1) / rows;
  slots = slots < kScanMinSlots ? kScanMinSlots : (slots > kScanMaxSlots ? kScanMaxSlots : slots);
  return blocks < slots ? blocks : slots;
}

// One entry point set per ISA and dtype. Units: forward = (batch, group, block);
// backward = (batch, group, slot). Ranges are [begin, end) over the flattened units.
struct ScanKernelTable {
  const char* isa;
  int width_float;  // channels per vector for fp32 (fp64 has half as many)
  void (*fwd_f32)(const ScanShape&, const ScanInputs&, const ScanForwardOutputs&, int64_t, int64_t);
  void (*fwd_f64)(const ScanShape&, const ScanInputs&, const ScanForwardOutputs&, int64_t, int64_t);
  void (*bwd_f32)(const ScanShape&, const ScanInputs&, const ScanBackwardIO&, int64_t, int64_t);
  void (*bwd_f64)(const ScanShape&, const ScanInputs&, const ScanBackwardIO&, int64_t, int64_t);
  // Arithmetic-bound micro-kernel: the scan's per-(t, n) arithmetic on registers only.
  // Returns a checksum so the work cannot be optimised away.
  float (*arith_bound)(int64_t n_blocks, int64_t len, int64_t dstate, int64_t begin, int64_t end);
};

const ScanKernelTable& scan_kernels_generic();
const ScanKernelTable& scan_kernels_avx2();
const ScanKernelTable& scan_kernels_avx512();

}  // namespace smdim
