// CPU implementations of smdim::selective_scan_fwd / smdim::selective_scan_bwd.
// The schemas, fake kernels and autograd live in smdim_kernels/ops/selective_scan/interface.py;
// this file only validates, converts to the compute dtype and runs the per-ISA kernels.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <vector>
#include <tuple>

#include "../common/isa.h"
#include "scan_params.h"

namespace smdim {
namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

// The kernels of the selected instruction set (common/isa.h).
const ScanKernelTable& kernels() {
  static const ScanKernelTable& table = select_kernels(&scan_kernels_avx512, &scan_kernels_avx2, &scan_kernels_generic);
  return table;
}

bool is_variable(const Tensor& t) { return t.dim() >= 3; }

// (batch, N, L) is one group; returns a (batch, groups, N, L) view.
Tensor as_grouped(const Tensor& t) { return t.dim() == 3 ? t.unsqueeze(1) : t; }

struct Prepared {
  ScanShape shape;
  at::ScalarType compute;
  Tensor u, delta, A, B, C, D, z, bias, init, seq;
  int64_t width = 8;
};

Tensor to_compute(const Tensor& t, at::ScalarType dtype) { return t.to(dtype).contiguous(); }

Prepared prepare(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B,
                 const Tensor& C, const OptTensor& D, const OptTensor& z, const OptTensor& bias,
                 bool softplus, const OptTensor& init, const OptTensor& seq, bool reverse) {
  TORCH_CHECK(u.dim() == 3, "selective_scan: u must be (batch, dim, L), got ", u.sizes());
  TORCH_CHECK(delta.sizes() == u.sizes(), "selective_scan: delta must match u ", u.sizes(), ", got ", delta.sizes());
  TORCH_CHECK(A.dim() == 2 && A.size(0) == u.size(1), "selective_scan: A must be (dim, N), got ", A.sizes());
  TORCH_CHECK(!A.is_complex(), "selective_scan: complex A is not supported");
  Prepared p;
  ScanShape& s = p.shape;
  s.batch = u.size(0);
  s.dim = u.size(1);
  s.len = u.size(2);
  s.dstate = A.size(1);
  TORCH_CHECK(s.dstate >= 1 && s.dstate <= kMaxDstate, "selective_scan: N (A.shape[1]) must be in [1, ", kMaxDstate,
              "], got ", s.dstate);
  s.var_B = is_variable(B);
  s.var_C = is_variable(C);
  const Tensor Bg = s.var_B ? as_grouped(B) : B;
  const Tensor Cg = s.var_C ? as_grouped(C) : C;
  for (const auto& [name, t, var] : {std::make_tuple("B", Bg, s.var_B), std::make_tuple("C", Cg, s.var_C)}) {
    if (var) {
      TORCH_CHECK(t.dim() == 4 && t.size(0) == s.batch && t.size(2) == s.dstate && t.size(3) == s.len &&
                      t.size(1) >= 1 && s.dim % t.size(1) == 0,
                  "selective_scan: ", name, " must be (dim, N), (batch, N, L) or (batch, G, N, L) with G dividing dim");
    } else {
      TORCH_CHECK(t.dim() == 2 && t.size(0) == s.dim && t.size(1) == s.dstate,
                  "selective_scan: ", name, " must be (dim, N), (batch, N, L) or (batch, G, N, L)");
    }
  }
  if (s.var_B && s.var_C)
    TORCH_CHECK(Bg.size(1) == Cg.size(1), "selective_scan: B and C must have the same number of groups");
  s.groups = s.var_B ? Bg.size(1) : (s.var_C ? Cg.size(1) : 1);
  s.has_D = D.has_value();
  s.has_z = z.has_value();
  s.has_bias = bias.has_value();
  s.softplus = softplus;
  s.has_init = init.has_value();
  s.has_seq = seq.has_value();
  s.reverse = reverse;
  s.n_chunks = (s.len + kScanChunk - 1) / kScanChunk;

  const bool any_double = u.scalar_type() == at::kDouble || delta.scalar_type() == at::kDouble ||
                          A.scalar_type() == at::kDouble || B.scalar_type() == at::kDouble ||
                          C.scalar_type() == at::kDouble;
  p.compute = any_double ? at::kDouble : at::kFloat;
  p.width = kernels().width_float / (any_double ? 2 : 1);
  p.u = to_compute(u, p.compute);
  p.delta = to_compute(delta, p.compute);
  p.A = to_compute(A, p.compute);
  // Input-dependent B/C go time-major, (batch, groups, L, N): one contiguous row per step.
  p.B = to_compute(s.var_B ? Bg.transpose(2, 3) : Bg, p.compute);
  p.C = to_compute(s.var_C ? Cg.transpose(2, 3) : Cg, p.compute);
  if (s.has_D) {
    TORCH_CHECK(D->dim() == 1 && D->size(0) == s.dim, "selective_scan: D must be (dim,), got ", D->sizes());
    p.D = to_compute(*D, p.compute);
  }
  if (s.has_z) {
    TORCH_CHECK(z->sizes() == u.sizes(), "selective_scan: z must match u ", u.sizes(), ", got ", z->sizes());
    p.z = to_compute(*z, p.compute);
  }
  if (s.has_bias) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == s.dim, "selective_scan: delta_bias must be (dim,), got ", bias->sizes());
    p.bias = to_compute(*bias, p.compute);
  }
  if (s.has_init) {
    TORCH_CHECK(init->dim() == 3 && init->size(0) == s.batch && init->size(1) == s.dim && init->size(2) == s.dstate,
                "selective_scan: initial_state must be (batch, dim, N), got ", init->sizes());
    p.init = to_compute(*init, p.compute);
  }
  if (s.has_seq) {
    TORCH_CHECK(seq->dim() == 2 && seq->size(0) == s.batch && seq->size(1) == s.len,
                "selective_scan: seq_idx must be (batch, L), got ", seq->sizes());
    TORCH_CHECK(!at::isFloatingType(seq->scalar_type()), "selective_scan: seq_idx must be an integer tensor");
    p.seq = seq->to(at::kLong).contiguous();
  }
  return p;
}

ScanInputs inputs_of(const Prepared& p) {
  ScanInputs in;
  in.u = p.u.data_ptr();
  in.delta = p.delta.data_ptr();
  in.A = p.A.data_ptr();
  in.B = p.B.data_ptr();
  in.C = p.C.data_ptr();
  if (p.shape.has_D) in.D = p.D.data_ptr();
  if (p.shape.has_z) in.z = p.z.data_ptr();
  if (p.shape.has_bias) in.bias = p.bias.data_ptr();
  if (p.shape.has_init) in.init = p.init.data_ptr();
  if (p.shape.has_seq) in.seq = p.seq.data_ptr<int64_t>();
  return in;
}

std::tuple<Tensor, Tensor, Tensor> selective_scan_fwd_cpu(
    const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B, const Tensor& C,
    const OptTensor& D, const OptTensor& z, const OptTensor& delta_bias, bool delta_softplus,
    const OptTensor& initial_state, const OptTensor& seq_idx, bool reverse, bool save_checkpoints) {
  Prepared p = prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, seq_idx, reverse);
  const ScanShape& s = p.shape;
  auto opts = p.u.options();
  Tensor out = at::empty({s.batch, s.dim, s.len}, opts);
  Tensor last = at::empty({s.batch, s.dim, s.dstate}, opts);
  Tensor ckpt = at::empty({s.batch, s.dim, save_checkpoints ? s.n_chunks : 0, s.dstate}, opts);
  if (s.len == 0) {
    if (s.has_init) last.copy_(p.init); else last.zero_();
  } else if (s.batch * s.dim > 0) {
    ScanInputs in = inputs_of(p);
    ScanForwardOutputs outs{out.data_ptr(), last.data_ptr(), save_checkpoints ? ckpt.data_ptr() : nullptr};
    const auto& k = kernels();
    auto fwd = p.compute == at::kDouble ? k.fwd_f64 : k.fwd_f32;
    const int64_t units = s.batch * s.groups * blocks_per_group(s, p.width);
    at::parallel_for(0, units, 1, [&](int64_t begin, int64_t end) { fwd(s, in, outs, begin, end); });
  }
  return {out.to(u.scalar_type()), last, ckpt};
}

Tensor empty_grad(const Tensor& like) { return at::empty({0}, like.options()); }

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> selective_scan_bwd_cpu(
    const Tensor& dout, const OptTensor& dlast_state, const Tensor& u, const Tensor& delta,
    const Tensor& A, const Tensor& B, const Tensor& C, const OptTensor& D, const OptTensor& z,
    const OptTensor& delta_bias, bool delta_softplus, const OptTensor& initial_state,
    const OptTensor& seq_idx, bool reverse, const Tensor& checkpoints) {
  Prepared p = prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, seq_idx, reverse);
  const ScanShape& s = p.shape;
  TORCH_CHECK(dout.sizes() == u.sizes(), "selective_scan backward: dout must match u ", u.sizes());
  TORCH_CHECK(checkpoints.dim() == 4 && checkpoints.size(0) == s.batch && checkpoints.size(1) == s.dim &&
                  checkpoints.size(2) == s.n_chunks && checkpoints.size(3) == s.dstate,
              "selective_scan backward: checkpoints must be (batch, dim, n_chunks, N) from a forward that saved "
              "them (an input required grad); got ", checkpoints.sizes());
  auto opts = p.u.options();
  const Tensor dout_c = to_compute(dout, p.compute);
  const Tensor ckpt_c = to_compute(checkpoints, p.compute);
  Tensor dlast_c;
  if (dlast_state.has_value()) {
    TORCH_CHECK(dlast_state->dim() == 3 && dlast_state->size(0) == s.batch && dlast_state->size(1) == s.dim &&
                    dlast_state->size(2) == s.dstate,
                "selective_scan backward: dlast_state must be (batch, dim, N)");
    dlast_c = to_compute(*dlast_state, p.compute);
  }
  const int64_t slots = slots_per_group(s, p.width);
  // The kernel stores every element of du, ddelta and dz (checked by filling them with NaN).
  Tensor du = at::empty({s.batch, s.dim, s.len}, opts);
  Tensor ddelta = at::empty({s.batch, s.dim, s.len}, opts);
  Tensor dz = s.has_z ? at::empty({s.batch, s.dim, s.len}, opts) : Tensor();
  Tensor dinit = s.has_init ? at::zeros({s.batch, s.dim, s.dstate}, opts) : Tensor();
  if (s.has_init && s.len == 0 && dlast_c.defined()) dinit.copy_(dlast_c);
  Tensor dA_part = at::zeros({s.batch, s.dim, s.dstate}, opts);
  // Per-slot rows of input-dependent dB/dC: every element is written by its slot's first block when
  // the kernel runs (checked by filling them with NaN), so they start uninitialised; zeros otherwise.
  const bool kernel_runs = s.len > 0 && s.batch * s.dim > 0;
  auto slot_rows = [&] {
    std::vector<int64_t> shape{s.batch, s.groups, slots, s.len, s.dstate};
    return kernel_runs ? at::empty(shape, opts) : at::zeros(shape, opts);
  };
  Tensor dB_part = s.var_B ? slot_rows() : at::zeros({s.batch, s.dim, s.dstate}, opts);
  Tensor dC_part = s.var_C ? slot_rows() : at::zeros({s.batch, s.dim, s.dstate}, opts);
  Tensor dD_part = s.has_D ? at::zeros({s.batch, s.dim}, opts) : Tensor();
  Tensor dbias_part = s.has_bias ? at::zeros({s.batch, s.dim}, opts) : Tensor();

  if (kernel_runs) {
    ScanInputs in = inputs_of(p);
    ScanBackwardIO io;
    io.dout = dout_c.data_ptr();
    io.dlast = dlast_c.defined() ? dlast_c.data_ptr() : nullptr;
    io.ckpt = ckpt_c.data_ptr();
    io.du = du.data_ptr();
    io.ddelta = ddelta.data_ptr();
    io.dz = s.has_z ? dz.data_ptr() : nullptr;
    io.dinit = s.has_init ? dinit.data_ptr() : nullptr;
    io.dA = dA_part.data_ptr();
    (s.var_B ? io.dB_var : io.dB_const) = dB_part.data_ptr();
    (s.var_C ? io.dC_var : io.dC_const) = dC_part.data_ptr();
    io.dD = s.has_D ? dD_part.data_ptr() : nullptr;
    io.dbias = s.has_bias ? dbias_part.data_ptr() : nullptr;
    io.n_slots = slots;
    const auto& k = kernels();
    auto bwd = p.compute == at::kDouble ? k.bwd_f64 : k.bwd_f32;
    const int64_t units = s.batch * s.groups * slots;
    at::parallel_for(0, units, 1, [&](int64_t begin, int64_t end) { bwd(s, in, io, begin, end); });
  }
  // Fixed-order reductions over batch and slots keep the result independent of threads.
  Tensor dB = s.var_B ? dB_part.sum(2).transpose(2, 3).contiguous().view(B.sizes()) : dB_part.sum(0);
  Tensor dC = s.var_C ? dC_part.sum(2).transpose(2, 3).contiguous().view(C.sizes()) : dC_part.sum(0);
  return {
      du.to(u.scalar_type()),
      ddelta.to(delta.scalar_type()),
      dA_part.sum(0).to(A.scalar_type()),
      dB.to(B.scalar_type()),
      dC.to(C.scalar_type()),
      s.has_D ? dD_part.sum(0).to(D->scalar_type()) : empty_grad(u),
      s.has_z ? dz.to(z->scalar_type()) : empty_grad(u),
      s.has_bias ? dbias_part.sum(0).to(delta_bias->scalar_type()) : empty_grad(u),
      s.has_init ? dinit.to(initial_state->scalar_type()) : empty_grad(u),
  };
}

// Benchmark helper: the scan's arithmetic on registers only, over the same work split.
double scan_arith_bound_cpu(int64_t batch, int64_t dim, int64_t len, int64_t dstate) {
  const auto& k = kernels();
  const int64_t units = batch * ((dim + k.width_float - 1) / k.width_float);
  std::vector<float> sums(at::get_num_threads() + 1, 0.f);
  at::parallel_for(0, units, 1, [&](int64_t begin, int64_t end) {
    sums[at::get_thread_num()] += k.arith_bound(units, len, dstate, begin, end);
  });
  double total = 0;
  for (float v : sums) total += v;
  return total;
}

std::string cpu_isa() { return selected_isa(); }  // the scan's and the conv's (common/isa.h)

std::vector<int64_t> scan_constants() { return {kScanChunk, kMaxDstate}; }

}  // namespace
}  // namespace smdim

TORCH_LIBRARY_IMPL(smdim, CPU, m) {
  m.impl("selective_scan_fwd", &smdim::selective_scan_fwd_cpu);
  m.impl("selective_scan_bwd", &smdim::selective_scan_bwd_cpu);
}

// Introspection and benchmark helpers of the native build (not part of the public op set).
TORCH_LIBRARY(smdim_native, m) {
  m.def("cpu_isa() -> str", &smdim::cpu_isa);
  m.def("scan_constants() -> int[]", &smdim::scan_constants);
  m.def("scan_arith_bound(int batch, int dim, int len, int dstate) -> float", &smdim::scan_arith_bound_cpu);
}
