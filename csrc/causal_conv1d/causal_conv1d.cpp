// CPU implementations of smdim::causal_conv1d_fwd / smdim::causal_conv1d_bwd: a depthwise
// causal (or, reverse, anti-causal) convolution (optionally followed by SiLU). Schemas, fake kernels and autograd live in
// smdim_kernels/ops/causal_conv1d/interface.py. One (batch, channel) row per work item; the
// row kernels (conv_rows.cpp) are vectorised over time.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "conv_rows.h"

#include <optional>
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

Tensor causal_conv1d_fwd_cpu(const Tensor& x, const Tensor& weight, const OptTensor& bias, bool silu, bool reverse) {
  const ConvShape s = check(x, weight, bias);
  const auto ct = compute_type(x, weight);
  const Tensor xc = x.to(ct).contiguous(), wc = weight.to(ct).contiguous();
  const Tensor bc = bias.has_value() ? bias->to(ct).contiguous() : at::zeros({s.dim}, xc.options());
  Tensor out = at::empty({s.batch, s.dim, s.len}, xc.options());
  AT_DISPATCH_FLOATING_TYPES(ct, "causal_conv1d_fwd_cpu", [&] {
    const scalar_t* xp = xc.data_ptr<scalar_t>();
    const scalar_t* wp = wc.data_ptr<scalar_t>();
    const scalar_t* bp = bc.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, s.batch * s.dim, 1, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t d = row % s.dim;
        conv_rows::forward(xp + row * s.len, wp + d * s.width, bp[d], s.len, s.width, reverse, op + row * s.len);
      }
    });
  });
  if (silu) at::silu_(out);  // ATen's vectorised SiLU (runtime-dispatched SIMD)
  return out.to(x.scalar_type());
}

std::tuple<Tensor, Tensor, Tensor> causal_conv1d_bwd_cpu(const Tensor& dout, const Tensor& x, const Tensor& weight,
                                                         const OptTensor& bias, bool silu, bool reverse) {
  const ConvShape s = check(x, weight, bias);
  TORCH_CHECK(dout.sizes() == x.sizes(), "causal_conv1d backward: dout must match x ", x.sizes());
  const auto ct = compute_type(x, weight);
  const Tensor xc = x.to(ct).contiguous(), wc = weight.to(ct).contiguous(), gc = dout.to(ct).contiguous();
  const Tensor bc = bias.has_value() ? bias->to(ct).contiguous() : at::zeros({s.dim}, xc.options());
  Tensor dx = at::empty({s.batch, s.dim, s.len}, xc.options());
  // Gradient of the pre-activation; with SiLU the pre-activation is recomputed, not saved.
  const Tensor dpre = silu ? at::silu_backward(gc, causal_conv1d_fwd_cpu(xc, wc, bc, false, reverse)) : gc;
  // Per-batch partials of the weight and bias gradients, summed in a fixed order below.
  Tensor dw_part = at::zeros({s.batch, s.dim, s.width}, xc.options());
  Tensor db_part = at::zeros({s.batch, s.dim}, xc.options());
  AT_DISPATCH_FLOATING_TYPES(ct, "causal_conv1d_bwd_cpu", [&] {
    const scalar_t* xp = xc.data_ptr<scalar_t>();
    const scalar_t* wp = wc.data_ptr<scalar_t>();
    const scalar_t* gp = dpre.data_ptr<scalar_t>();
    scalar_t* dxp = dx.data_ptr<scalar_t>();
    scalar_t* dwp = dw_part.data_ptr<scalar_t>();
    scalar_t* dbp = db_part.data_ptr<scalar_t>();
    at::parallel_for(0, s.batch * s.dim, 1, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t d = row % s.dim;
        conv_rows::backward(xp + row * s.len, wp + d * s.width, gp + row * s.len, s.len, s.width, reverse,
                            dxp + row * s.len, dwp + row * s.width, dbp + row);
      }
    });
  });
  return {dx.to(x.scalar_type()), dw_part.sum(0).to(weight.scalar_type()),
          bias.has_value() ? db_part.sum(0).to(bias->scalar_type()) : at::empty({0}, x.options())};
}

}  // namespace
}  // namespace smdim

TORCH_LIBRARY_IMPL(smdim, CPU, m) {
  m.impl("causal_conv1d_fwd", &smdim::causal_conv1d_fwd_cpu);
  m.impl("causal_conv1d_bwd", &smdim::causal_conv1d_bwd_cpu);
}
