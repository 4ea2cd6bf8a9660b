// CPU implementations of smdim::causal_conv1d_fwd / smdim::causal_conv1d_bwd: a depthwise
// causal (or, reverse, anti-causal) convolution (optionally followed by SiLU). Schemas, fake kernels and autograd live in
// smdim_kernels/ops/causal_conv1d/interface.py. One (batch, channel) row per work item; the
// row kernels (conv_kernel.h, compiled per instruction set) are vectorised over time and apply
// the SiLU and its derivative themselves.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../common/isa.h"
#include "conv_params.h"

#include <optional>
#include <string>
#include <tuple>

namespace smdim {
namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

struct ConvShape {
  int64_t batch, dim, len, width;
};

ConvShape check(const Tensor& x, const Tensor& weight, const OptTensor& bias) {
  TORCH_CHECK(x.dim() == 3, "causal_conv1d: x must be (batch, dim, L), got ", x.sizes());
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) == x.size(1),
              "causal_conv1d: weight must be (dim, width), got ", weight.sizes());
  TORCH_CHECK(weight.size(1) >= 1, "causal_conv1d: weight width must be >= 1, got ", weight.sizes());
  if (bias.has_value())
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == x.size(1), "causal_conv1d: bias must be (dim,), got ", bias->sizes());
  return {x.size(0), x.size(1), x.size(2), weight.size(1)};
}

at::ScalarType compute_type(const Tensor& x, const Tensor& weight) {
  return (x.scalar_type() == at::kDouble || weight.scalar_type() == at::kDouble) ? at::kDouble : at::kFloat;
}

// The kernels of the selected instruction set (common/isa.h).
const ConvKernelTable& kernels() {
  static const ConvKernelTable& table = select_kernels(&conv_kernels_avx512, &conv_kernels_avx2, &conv_kernels_generic);
  return table;
}

// Inputs in the compute dtype, contiguous; the bias zeros when absent.
struct Inputs {
  Tensor x, w, b;
};

Inputs inputs(const ConvShape& s, const Tensor& x, const Tensor& weight, const OptTensor& bias) {
  const auto ct = compute_type(x, weight);
  Tensor xc = x.to(ct).contiguous(), wc = weight.to(ct).contiguous();
  Tensor bc = bias.has_value() ? bias->to(ct).contiguous() : at::zeros({s.dim}, xc.options());
  return {xc, wc, bc};
}

ConvRows rows_of(const ConvShape& s, const Inputs& in, bool silu, bool reverse) {
  ConvRows c;
  c.dim = s.dim;
  c.len = s.len;
  c.width = s.width;
  c.silu = silu;
  c.reverse = reverse;
  c.x = in.x.data_ptr();
  c.w = in.w.data_ptr();
  c.bias = in.b.data_ptr();
  return c;
}

Tensor causal_conv1d_fwd_cpu(const Tensor& x, const Tensor& weight, const OptTensor& bias, bool silu, bool reverse) {
  const ConvShape s = check(x, weight, bias);
  const Inputs in = inputs(s, x, weight, bias);
  Tensor out = at::empty({s.batch, s.dim, s.len}, in.x.options());
  ConvRows c = rows_of(s, in, silu, reverse);
  c.out = out.data_ptr();
  const auto& k = kernels();
  const auto fwd = in.x.scalar_type() == at::kDouble ? k.fwd_f64 : k.fwd_f32;
  at::parallel_for(0, s.batch * s.dim, 1, [&](int64_t begin, int64_t end) { fwd(c, begin, end); });
  return out.to(x.scalar_type());
}

std::tuple<Tensor, Tensor, Tensor> causal_conv1d_bwd_cpu(const Tensor& dout, const Tensor& x, const Tensor& weight,
                                                         const OptTensor& bias, bool silu, bool reverse) {
  const ConvShape s = check(x, weight, bias);
  TORCH_CHECK(dout.sizes() == x.sizes(), "causal_conv1d backward: dout must match x ", x.sizes());
  const Inputs in = inputs(s, x, weight, bias);
  const Tensor gc = dout.to(in.x.scalar_type()).contiguous();
  Tensor dx = at::empty({s.batch, s.dim, s.len}, in.x.options());
  // Per-row partials of the weight and bias gradients, summed over the batch in a fixed order below.
  Tensor dw_part = at::empty({s.batch, s.dim, s.width}, in.x.options());
  Tensor db_part = at::empty({s.batch, s.dim}, in.x.options());
  ConvRows c = rows_of(s, in, silu, reverse);
  c.dout = gc.data_ptr();
  c.dx = dx.data_ptr();
  c.dw = dw_part.data_ptr();
  c.db = db_part.data_ptr();
  const auto& k = kernels();
  const auto bwd = in.x.scalar_type() == at::kDouble ? k.bwd_f64 : k.bwd_f32;
  at::parallel_for(0, s.batch * s.dim, 1, [&](int64_t begin, int64_t end) { bwd(c, begin, end); });
  return {dx.to(x.scalar_type()), dw_part.sum(0).to(weight.scalar_type()),
          bias.has_value() ? db_part.sum(0).to(bias->scalar_type()) : at::empty({0}, x.options())};
}

}  // namespace
}  // namespace smdim

TORCH_LIBRARY_IMPL(smdim, CPU, m) {
  m.impl("causal_conv1d_fwd", &smdim::causal_conv1d_fwd_cpu);
  m.impl("causal_conv1d_bwd", &smdim::causal_conv1d_bwd_cpu);
}
