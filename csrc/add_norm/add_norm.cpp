// CPU implementations of smdim::add_norm_fwd / smdim::add_norm_bwd: residual add fused with
// LayerNorm or RMSNorm (prenorm style). Schemas, fake kernels and autograd live in
// smdim_kernels/ops/add_norm/interface.py. Rows are independent; weight/bias gradients are
// summed per fixed block of rows, then over blocks in order (deterministic for any thread count).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <optional>
#include <algorithm>
#include <tuple>

namespace smdim {
namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

constexpr int64_t kRowsPerBlock = 64;

std::tuple<Tensor, Tensor, Tensor, Tensor> add_norm_fwd_cpu(const Tensor& x, const OptTensor& residual,
                                                            const Tensor& weight, const OptTensor& bias,
                                                            double eps, bool rms, bool residual_in_fp32) {
  TORCH_CHECK(x.dim() >= 1 && weight.dim() == 1 && x.size(-1) == weight.size(0),
              "add_norm: weight must be (hidden,) matching x's last dim, got ", weight.sizes(), " for x ", x.sizes());
  if (residual.has_value()) TORCH_CHECK(residual->sizes() == x.sizes(), "add_norm: residual must match x ", x.sizes());
  const int64_t hidden = x.size(-1), rows = x.numel() / std::max<int64_t>(hidden, 1);
  const bool any_double = x.scalar_type() == at::kDouble || weight.scalar_type() == at::kDouble;
  const auto ct = any_double ? at::kDouble : at::kFloat;
  // The sum is formed in the compute dtype (one rounding), not in double.
  // residual_out is a new tensor even without a residual (outputs must not alias inputs).
  Tensor hc = at::empty(x.sizes(), x.options().dtype(ct));
  if (residual.has_value()) at::add_out(hc, x.to(ct), residual->to(ct));
  else hc.copy_(x);
  const Tensor wc = weight.to(ct).contiguous();
  const Tensor bc = bias.has_value() ? bias->to(ct).contiguous() : Tensor();
  Tensor out = at::empty_like(hc);
  Tensor mean = at::zeros({rows}, hc.options());
  Tensor rstd = at::empty({rows}, hc.options());
  AT_DISPATCH_FLOATING_TYPES(ct, "add_norm_fwd_cpu", [&] {
    const scalar_t* hp = hc.data_ptr<scalar_t>();
    const scalar_t* wp = wc.data_ptr<scalar_t>();
    const scalar_t* bp = bias.has_value() ? bc.data_ptr<scalar_t>() : nullptr;
    scalar_t* op = out.data_ptr<scalar_t>();
    scalar_t* mp = mean.data_ptr<scalar_t>();
    scalar_t* rp = rstd.data_ptr<scalar_t>();
    at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const scalar_t* row = hp + r * hidden;
        scalar_t mu = 0;
        if (!rms) {
          for (int64_t i = 0; i < hidden; ++i) mu += row[i];
          mu /= hidden;
        }
        scalar_t var = 0;
        for (int64_t i = 0; i < hidden; ++i) var += (row[i] - mu) * (row[i] - mu);
        const scalar_t inv = scalar_t(1) / std::sqrt(var / hidden + static_cast<scalar_t>(eps));
        mp[r] = mu;
        rp[r] = inv;
        scalar_t* o = op + r * hidden;
        for (int64_t i = 0; i < hidden; ++i) o[i] = (row[i] - mu) * inv * wp[i] + (bp ? bp[i] : scalar_t(0));
      }
    });
  });
  const auto res_dtype = residual_in_fp32 ? at::kFloat : (residual.has_value() ? residual->scalar_type() : x.scalar_type());
  return {out.to(x.scalar_type()).view(x.sizes()), hc.to(any_double ? at::kDouble : res_dtype).view(x.sizes()),
          mean, rstd};
}

std::tuple<Tensor, Tensor, Tensor> add_norm_bwd_cpu(const Tensor& dout, const OptTensor& dresidual_out,
                                                            const Tensor& residual_out, const Tensor& weight,
                                                            const OptTensor& bias, const Tensor& mean,
                                                            const Tensor& rstd, bool rms) {
  const int64_t hidden = residual_out.size(-1), rows = residual_out.numel() / std::max<int64_t>(hidden, 1);
  const auto ct = mean.scalar_type();
  const Tensor hc = residual_out.to(ct).contiguous(), gc = dout.to(ct).contiguous(), wc = weight.to(ct).contiguous();
  const Tensor drc = dresidual_out.has_value() ? dresidual_out->to(ct).contiguous() : Tensor();
  Tensor dh = at::empty_like(hc);
  const int64_t blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  Tensor dw_part = at::zeros({blocks, hidden}, hc.options());
  Tensor db_part = at::zeros({blocks, hidden}, hc.options());
  AT_DISPATCH_FLOATING_TYPES(ct, "add_norm_bwd_cpu", [&] {
    const scalar_t* hp = hc.data_ptr<scalar_t>();
    const scalar_t* gp = gc.data_ptr<scalar_t>();
    const scalar_t* wp = wc.data_ptr<scalar_t>();
    const scalar_t* drp = drc.defined() ? drc.data_ptr<scalar_t>() : nullptr;
    const scalar_t* mp = mean.data_ptr<scalar_t>();
    const scalar_t* rp = rstd.data_ptr<scalar_t>();
    scalar_t* dhp = dh.data_ptr<scalar_t>();
    scalar_t* dwp = dw_part.data_ptr<scalar_t>();
    scalar_t* dbp = db_part.data_ptr<scalar_t>();
    at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t blk = begin; blk < end; ++blk) {
        scalar_t* dw = dwp + blk * hidden;
        scalar_t* db = dbp + blk * hidden;
        for (int64_t r = blk * kRowsPerBlock; r < std::min(rows, (blk + 1) * kRowsPerBlock); ++r) {
          const scalar_t* h = hp + r * hidden;
          const scalar_t* g = gp + r * hidden;
          const scalar_t mu = mp[r], inv = rp[r];
          scalar_t sum_g = 0, sum_gx = 0;  // sums of (dout * w) and (dout * w * xhat)
          for (int64_t i = 0; i < hidden; ++i) {
            const scalar_t xhat = (h[i] - mu) * inv, gw = g[i] * wp[i];
            sum_g += gw;
            sum_gx += gw * xhat;
            dw[i] += g[i] * xhat;
            db[i] += g[i];
          }
          const scalar_t mean_g = rms ? scalar_t(0) : sum_g / hidden, mean_gx = sum_gx / hidden;
          scalar_t* d = dhp + r * hidden;
          for (int64_t i = 0; i < hidden; ++i) {
            const scalar_t xhat = (h[i] - mu) * inv;
            d[i] = inv * (g[i] * wp[i] - mean_g - xhat * mean_gx) + (drp ? drp[r * hidden + i] : scalar_t(0));
          }
        }
      }
    });
  });
  return {dh.view(residual_out.sizes()), dw_part.sum(0).to(weight.scalar_type()),
          bias.has_value() ? db_part.sum(0).to(bias->scalar_type()) : at::empty({0}, weight.options())};
}

}  // namespace
}  // namespace smdim

TORCH_LIBRARY_IMPL(smdim, CPU, m) {
  m.impl("add_norm_fwd", &smdim::add_norm_fwd_cpu);
  m.impl("add_norm_bwd", &smdim::add_norm_bwd_cpu);
}
