// Selective-scan CPU kernels, written once and compiled per ISA (see scan_kernel_*.cpp).
//
// A unit owns `width` channels (one SIMD vector) of one batch row for the whole sequence,
// so states never leave the core and no (batch, dim, len, dstate) tensor exists. Inputs
// are staged chunk by chunk into time-major tiles (tile[i][lane]) in processing order,
// which makes the forward and the reverse scan the same loop.
#pragma once

#include <cstdlib>

#include "../common/simd.h"
#include "scan_params.h"

namespace smdim {
namespace SMDIM_ISA {

constexpr int64_t kMaxState = 256;
constexpr int64_t kSpanChunks = 8;  // forward time span (in chunks) shared by a range's units

// Everything here lives in the per-ISA namespace and no std template is instantiated:
// identical template instantiations from differently targeted units would be merged by
// the linker, and the generic build could end up running AVX-512 code.
inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

template <typename V>
class Buffer {
 public:
  explicit Buffer(int64_t n) : n_(n) {
    if (n > 0) {
      ptr_ = static_cast<V*>(std::aligned_alloc(alignof(V), ((n * sizeof(V) + 63) / 64) * 64));
      if (ptr_ == nullptr) std::abort();
      for (int64_t i = 0; i < n; ++i) ptr_[i] = V{};
    }
  }
  ~Buffer() { std::free(ptr_); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  V* data() { return ptr_; }
  const V* data() const { return ptr_; }
  V& operator[](int64_t i) { return ptr_[i]; }
  const V& operator[](int64_t i) const { return ptr_[i]; }

 private:
  V* ptr_ = nullptr;
  int64_t n_;
};

struct UnitGeometry {
  int64_t b, g, d0, lanes;  // batch row, group, first channel, valid lanes (<= width)
};

template <typename T>
struct Tiles {
  static constexpr int W = Vec<T>::width;
  using V = vec_t<T>;
  Buffer<V> u, dt, raw, z, aux;   // [chunk] each; raw = delta + bias before softplus
  const T* B[kScanChunk];          // input-dependent B/C: the N values of each step
  const T* C[kScanChunk];
  Buffer<unsigned char> keep;     // [chunk]: 0 where a packed sequence starts
  explicit Tiles(int64_t N)
      : u(kScanChunk), dt(kScanChunk), raw(kScanChunk), z(kScanChunk), aux(kScanChunk),
        keep(kScanChunk) {}
};

inline int64_t time_of(const ScanShape& s, int64_t pos) {
  return s.reverse ? s.len - 1 - pos : pos;
}

// Gather a (lanes x cnt) slab of a (.., len) row-major tensor into tile[i][lane] (i in
// processing order); lanes past geo.lanes are zero. Full width x width blocks go through
// registers (vector loads along each row + an in-register transpose); the rest is scalar.
template <typename T>
inline void load_tile(const ScanShape& s, const T* rows, const UnitGeometry& geo, int64_t pos0,
                      int64_t cnt, vec_t<T>* tile) {
  constexpr int W = Vec<T>::width;
  const T* src[W];
  const int64_t start = s.reverse ? s.len - 1 - pos0 : pos0;
  const int64_t step = s.reverse ? -1 : 1;
  for (int w = 0; w < W; ++w) src[w] = rows + (geo.b * s.dim + geo.d0 + min64(w, geo.lanes - 1)) * s.len + start;
  int64_t i0 = 0;
  if (geo.lanes == W) {
    vec_t<T> block[W];
    for (; i0 + W <= cnt; i0 += W) {
      for (int w = 0; w < W; ++w)
        block[w] = load_unaligned<T>(s.reverse ? src[w] - i0 - (W - 1) : src[w] + i0);
      transpose_square<T>(block);
      for (int j = 0; j < W; ++j) tile[i0 + (s.reverse ? W - 1 - j : j)] = block[j];
    }
  }
  T* flat = reinterpret_cast<T*>(tile);
  for (int64_t i = i0; i < cnt; ++i)
    for (int w = 0; w < W; ++w) flat[i * W + w] = w < geo.lanes ? src[w][i * step] : T(0);
}

// Ask for the next chunk's slab of a (.., len) tensor while this chunk computes: the rows of
// a block are far apart, more streams than the hardware prefetchers follow.
template <typename T>
inline void prefetch_tile(const ScanShape& s, const T* rows, const UnitGeometry& geo, int64_t pos0, int64_t cnt) {
  constexpr int64_t kLine = 64 / sizeof(T);
  if (cnt <= 0) return;
  const int64_t first = s.reverse ? s.len - pos0 - cnt : pos0;
  for (int64_t w = 0; w < geo.lanes; ++w) {
    const T* row = rows + (geo.b * s.dim + geo.d0 + w) * s.len + first;
    for (int64_t i = 0; i < cnt; i += kLine) __builtin_prefetch(row + i);
    __builtin_prefetch(row + cnt - 1);
  }
}

template <typename T>
inline void store_tile(const ScanShape& s, T* rows, const UnitGeometry& geo, int64_t pos0,
                       int64_t cnt, const vec_t<T>* tile) {
  constexpr int W = Vec<T>::width;
  const int64_t start = s.reverse ? s.len - 1 - pos0 : pos0;
  const int64_t step = s.reverse ? -1 : 1;
  T* dst[W];
  for (int w = 0; w < W; ++w) dst[w] = rows + (geo.b * s.dim + geo.d0 + min64(w, geo.lanes - 1)) * s.len + start;
  int64_t i0 = 0;
  if (geo.lanes == W) {
    vec_t<T> block[W];
    for (; i0 + W <= cnt; i0 += W) {
      for (int j = 0; j < W; ++j) block[j] = tile[i0 + (s.reverse ? W - 1 - j : j)];
      transpose_square<T>(block);
      for (int w = 0; w < W; ++w)
        store_unaligned<T>(s.reverse ? dst[w] - i0 - (W - 1) : dst[w] + i0, block[w]);
    }
  }
  const T* flat = reinterpret_cast<const T*>(tile);
  for (int64_t w = 0; w < geo.lanes; ++w)
    for (int64_t i = i0; i < cnt; ++i) dst[w][i * step] = flat[i * W + w];
}

// Stage everything a chunk needs: u, dt (= softplus(delta + bias) or delta + bias), z,
// input-dependent B/C rows (time-major) and the packed-sequence reset flags.
template <typename T>
inline void stage_chunk(const ScanShape& s, const ScanInputs& in, const UnitGeometry& geo,
                        int64_t pos0, int64_t cnt, vec_t<T> bias, Tiles<T>& tl) {
  using V = vec_t<T>;
  const int64_t N = s.dstate;
  load_tile<T>(s, static_cast<const T*>(in.u), geo, pos0, cnt, tl.u.data());
  load_tile<T>(s, static_cast<const T*>(in.delta), geo, pos0, cnt, tl.raw.data());
  for (int64_t i = 0; i < cnt; ++i) {
    V r = tl.raw[i] + bias;
    tl.raw[i] = r;
    tl.dt[i] = s.softplus ? softplus<T>(r) : r;
  }
  if (s.has_z) load_tile<T>(s, static_cast<const T*>(in.z), geo, pos0, cnt, tl.z.data());
  // Input-dependent B/C arrive time-major, (batch, groups, len, N): point at each step's row.
  auto stage_rows = [&](const void* src, const T** dst) {
    const T* base = static_cast<const T*>(src) + (geo.b * s.groups + geo.g) * s.len * N;
    for (int64_t i = 0; i < cnt; ++i) dst[i] = base + time_of(s, pos0 + i) * N;
  };
  if (s.var_B) stage_rows(in.B, tl.B);
  if (s.var_C) stage_rows(in.C, tl.C);
  for (int64_t i = 0; i < cnt; ++i) {
    const int64_t pos = pos0 + i;
    bool keep = true;
    if (s.has_seq && pos > 0) {
      const int64_t* seq = in.seq + geo.b * s.len;
      keep = seq[time_of(s, pos)] == seq[time_of(s, pos - 1)];
    }
    tl.keep[i] = keep;
  }
}

template <typename T>
inline UnitGeometry geometry(const ScanShape& s, int64_t b, int64_t g, int64_t block) {
  constexpr int W = Vec<T>::width;
  const int64_t dpg = dims_per_group(s);
  const int64_t first = block * W;
  return {b, g, g * dpg + first, min64(W, dpg - first)};
}

// Per-channel (dim, dstate) parameter -> per-state vectors over the unit's lanes.
template <typename T>
inline void load_channel_matrix(const ScanShape& s, int64_t N, const void* src,
                                const UnitGeometry& geo, T scale, vec_t<T>* dst) {
  const T* p = static_cast<const T*>(src);
  for (int64_t n = 0; n < N; ++n) {
    dst[n] = vec_t<T>{};
    for (int64_t w = 0; w < geo.lanes; ++w) dst[n][w] = p[(geo.d0 + w) * s.dstate + n] * scale;
  }
}

template <typename T>
inline vec_t<T> load_channel_vector(const void* src, const UnitGeometry& geo) {
  vec_t<T> v{};
  if (src == nullptr) return v;
  const T* p = static_cast<const T*>(src);
  for (int64_t w = 0; w < geo.lanes; ++w) v[w] = p[geo.d0 + w];
  return v;
}

// (batch, dim, dstate) row of the unit <-> per-state vectors.
template <typename T>
inline void load_state(const ScanShape& s, int64_t N, const void* src, const UnitGeometry& geo,
                       int64_t chunks, int64_t chunk, vec_t<T>* h) {
  for (int64_t n = 0; n < N; ++n) h[n] = vec_t<T>{};
  if (src == nullptr) return;
  const T* p = static_cast<const T*>(src);
  for (int64_t w = 0; w < geo.lanes; ++w) {
    const T* row = p + ((geo.b * s.dim + geo.d0 + w) * chunks + chunk) * s.dstate;
    for (int64_t n = 0; n < N; ++n) h[n][w] = row[n];
  }
}

template <typename T>
inline void store_state(const ScanShape& s, int64_t N, void* dst, const UnitGeometry& geo,
                        int64_t chunks, int64_t chunk, const vec_t<T>* h) {
  T* p = static_cast<T*>(dst);
  for (int64_t w = 0; w < geo.lanes; ++w) {
    T* row = p + ((geo.b * s.dim + geo.d0 + w) * chunks + chunk) * s.dstate;
    for (int64_t n = 0; n < N; ++n) row[n] = h[n][w];
  }
}

template <typename T>
inline vec_t<T> silu(vec_t<T> z) {
  return z * sigmoid<T>(z);
}

// One recurrence step for all states of the unit. A2 = A * log2(e), so exp(dt*A) = 2^(dt*A2).
// Optionally records exp(dt*A) and the new state for the backward.
template <typename T, int NS, bool kVarB, bool kVarC, bool kRecord>
inline vec_t<T> scan_step(int64_t N, vec_t<T> dt, vec_t<T> dtu, const vec_t<T>* A2,
                          const vec_t<T>* Bc, const vec_t<T>* Cc, const T* Bt, const T* Ct,
                          vec_t<T>* h, vec_t<T>* dA_rec, vec_t<T>* h_rec) {
  using V = vec_t<T>;
  if (NS > 0) N = NS;
  V y{};
#pragma GCC unroll 16
  for (int64_t n = 0; n < N; ++n) {
    V dA = exp2_fast(dt * A2[n]);
    V Bn = kVarB ? splat(Bt[n]) : Bc[n];
    V Cn = kVarC ? splat(Ct[n]) : Cc[n];
    V hn = h[n] * dA + dtu * Bn;
    h[n] = hn;
    y += hn * Cn;
    if (kRecord) {
      dA_rec[n] = dA;
      h_rec[n] = hn;
    }
  }
  return y;
}

template <typename T, int NS, bool kVarB, bool kVarC>
void scan_forward(const ScanShape& s, const ScanInputs& in, const ScanForwardOutputs& out,
                  int64_t begin, int64_t end) {
  using V = vec_t<T>;
  constexpr int W = Vec<T>::width;
  const int64_t N = NS > 0 ? NS : s.dstate;
  const int64_t blocks = blocks_per_group(s, W);
  Tiles<T> tl(N);
  // Sized exactly for a compile-time N so the state can live in registers.
  constexpr int64_t kSlots = NS > 0 ? NS : kMaxState;
  V A2[kSlots], Bc[kSlots], Cc[kSlots], h[kSlots];
  // Time runs in spans of kSpanChunks chunks, all of this range's units per span: the
  // span's input-dependent B/C rows stay in cache while every channel block reads them.
  // Each unit's state waits in `states` between spans.
  Buffer<V> states((end - begin) * N);
  for (int64_t c_lo = 0; c_lo < s.n_chunks; c_lo += kSpanChunks) {
    const int64_t c_hi = min64(c_lo + kSpanChunks, s.n_chunks);
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t block = unit % blocks, bg = unit / blocks;
      const auto geo = geometry<T>(s, bg / s.groups, bg % s.groups, block);
      V* saved = &states[(unit - begin) * N];
      load_channel_matrix<T>(s, N, in.A, geo, T(kLog2e), A2);
      if (!s.var_B) load_channel_matrix<T>(s, N, in.B, geo, T(1), Bc);
      if (!s.var_C) load_channel_matrix<T>(s, N, in.C, geo, T(1), Cc);
      const V Dv = load_channel_vector<T>(s.has_D ? in.D : nullptr, geo);
      const V bias = load_channel_vector<T>(s.has_bias ? in.bias : nullptr, geo);
      if (c_lo == 0) load_state<T>(s, N, s.has_init ? in.init : nullptr, geo, 1, 0, h);
      else for (int64_t n = 0; n < N; ++n) h[n] = saved[n];
      for (int64_t c = c_lo; c < c_hi; ++c) {
        const int64_t pos0 = c * kScanChunk, cnt = min64(kScanChunk, s.len - pos0);
        if (out.ckpt != nullptr) store_state<T>(s, N, out.ckpt, geo, s.n_chunks, c, h);
        stage_chunk<T>(s, in, geo, pos0, cnt, bias, tl);
        const int64_t next = pos0 + kScanChunk, next_cnt = min64(kScanChunk, s.len - next);
        prefetch_tile<T>(s, static_cast<const T*>(in.u), geo, next, next_cnt);
        prefetch_tile<T>(s, static_cast<const T*>(in.delta), geo, next, next_cnt);
        if (s.has_z) prefetch_tile<T>(s, static_cast<const T*>(in.z), geo, next, next_cnt);
        for (int64_t i = 0; i < cnt; ++i) {
          if (!tl.keep[i])
            for (int64_t n = 0; n < N; ++n) h[n] = V{};
          const V dt = tl.dt[i], u = tl.u[i];
          V y = scan_step<T, NS, kVarB, kVarC, false>(N, dt, dt * u, A2, Bc, Cc, tl.B[i], tl.C[i], h,
                                                     nullptr, nullptr);
          y += Dv * u;
          tl.aux[i] = s.has_z ? y * silu<T>(tl.z[i]) : y;
        }
        store_tile<T>(s, static_cast<T*>(out.out), geo, pos0, cnt, tl.aux.data());
      }
      if (c_hi == s.n_chunks) store_state<T>(s, N, out.last, geo, 1, 0, h);
      else for (int64_t n = 0; n < N; ++n) saved[n] = h[n];
    }
  }
}

template <typename T>
inline T horizontal_sum(vec_t<T> v) {
  T acc = 0;
  for (int w = 0; w < Vec<T>::width; ++w) acc += v[w];
  return acc;
}

// Backward of one slot: its channel blocks in order, each from the last chunk to the
// first, re-running the chunk's forward from its checkpoint and then the adjoint scan.
//   lam_i = C_i g_i + exp(dt_{i+1} A) keep_{i+1} lam_{i+1},  g_i = dL/dy_i
//   dh_{-1} = exp(dt_0 A) lam_0 is the initial state's gradient.
template <typename T, int NS, bool kVarB, bool kVarC>
void scan_backward(const ScanShape& s, const ScanInputs& in, const ScanBackwardIO& io,
                   int64_t begin, int64_t end) {
  using V = vec_t<T>;
  constexpr int W = Vec<T>::width;
  const int64_t N = NS > 0 ? NS : s.dstate;
  const int64_t blocks = blocks_per_group(s, W);
  const int64_t slots = io.n_slots;
  Tiles<T> tl(N);
  Buffer<V> dA_rec(kScanChunk * N), h_rec(kScanChunk * N), y_rec(kScanChunk),
      dout(kScanChunk), du(kScanChunk), ddelta(kScanChunk), dz(kScanChunk);
  Buffer<V> gB(s.var_B ? kScanChunk * N : 0), gC(s.var_C ? kScanChunk * N : 0);
  constexpr int64_t kSlots = NS > 0 ? NS : kMaxState;
  V A[kSlots], A2[kSlots], Bc[kSlots], Cc[kSlots], h[kSlots], h_start[kSlots];
  V lam[kSlots], accA[kSlots], accB[kSlots], accC[kSlots];
  for (int64_t unit = begin; unit < end; ++unit) {
    const int64_t slot = unit % slots, bg = unit / slots;
    const int64_t b = bg / s.groups, g = bg % s.groups;
    const int64_t block_lo = slot * blocks / slots, block_hi = (slot + 1) * blocks / slots;
    T* dB_var = s.var_B ? static_cast<T*>(io.dB_var) + (bg * slots + slot) * s.len * N : nullptr;
    T* dC_var = s.var_C ? static_cast<T*>(io.dC_var) + (bg * slots + slot) * s.len * N : nullptr;
    // As in the forward, time runs in spans (here from the last) with all of the slot's
    // blocks per span, so the span's B/C rows and dB/dC partial rows stay in cache. Each
    // block's adjoint state and accumulators wait in `carry` between spans.
    const int64_t carry_size = 4 * N + 2;
    Buffer<V> carry((block_hi - block_lo) * carry_size);
    for (int64_t c_hi = s.n_chunks; c_hi > 0; c_hi -= kSpanChunks) {
      const int64_t c_lo = c_hi > kSpanChunks ? c_hi - kSpanChunks : 0;
      for (int64_t block = block_lo; block < block_hi; ++block) {
        const auto geo = geometry<T>(s, b, g, block);
        load_channel_matrix<T>(s, N, in.A, geo, T(1), A);
        load_channel_matrix<T>(s, N, in.A, geo, T(kLog2e), A2);
        if (!s.var_B) load_channel_matrix<T>(s, N, in.B, geo, T(1), Bc);
        if (!s.var_C) load_channel_matrix<T>(s, N, in.C, geo, T(1), Cc);
        const V Dv = load_channel_vector<T>(s.has_D ? in.D : nullptr, geo);
        const V bias = load_channel_vector<T>(s.has_bias ? in.bias : nullptr, geo);
        V* saved = &carry[(block - block_lo) * carry_size];
        V accD{}, accBias{};
        if (c_hi == s.n_chunks) {
          load_state<T>(s, N, io.dlast, geo, 1, 0, lam);
          for (int64_t n = 0; n < N; ++n) accA[n] = accB[n] = accC[n] = V{};
        } else {
          for (int64_t n = 0; n < N; ++n) {
            lam[n] = saved[n];
            accA[n] = saved[N + n];
            accB[n] = saved[2 * N + n];
            accC[n] = saved[3 * N + n];
          }
          accD = saved[4 * N];
          accBias = saved[4 * N + 1];
        }
        for (int64_t c = c_hi - 1; c >= c_lo; --c) {
          const int64_t pos0 = c * kScanChunk, cnt = min64(kScanChunk, s.len - pos0);
          stage_chunk<T>(s, in, geo, pos0, cnt, bias, tl);
          load_tile<T>(s, static_cast<const T*>(io.dout), geo, pos0, cnt, dout.data());
          load_state<T>(s, N, io.ckpt, geo, s.n_chunks, c, h_start);
          for (int64_t n = 0; n < N; ++n) h[n] = h_start[n];
          for (int64_t i = 0; i < cnt; ++i) {
            if (!tl.keep[i])
              for (int64_t n = 0; n < N; ++n) h[n] = V{};
            const V dt = tl.dt[i];
            y_rec[i] = scan_step<T, NS, kVarB, kVarC, true>(N, dt, dt * tl.u[i], A2, Bc, Cc,
                                                            tl.B[i], tl.C[i], h,
                                                            &dA_rec[i * N], &h_rec[i * N]);
          }
          for (int64_t i = cnt - 1; i >= 0; --i) {
            const V u = tl.u[i], dt = tl.dt[i];
            V grad_y = dout[i];
            if (s.has_z) {
              const V zi = tl.z[i], sig = sigmoid<T>(zi);
              const V y = y_rec[i] + Dv * u;
              dz[i] = grad_y * y * sig * (T(1) + zi * (T(1) - sig));
              grad_y = grad_y * zi * sig;
            }
            const bool keep = tl.keep[i];
            const V* h_prev = i > 0 ? &h_rec[(i - 1) * N] : h_start;
            const T* Bt = tl.B[i];
            const T* Ct = tl.C[i];
            const V dtu = dt * u;
            V sumB{}, ddt{};
  #pragma GCC unroll 16
            for (int64_t n = 0; n < N; ++n) {
              const V Bn = kVarB ? splat(Bt[n]) : Bc[n];
              const V Cn = kVarC ? splat(Ct[n]) : Cc[n];
              const V hn = h_rec[i * N + n];
              const V ln = lam[n] + Cn * grad_y;
              const V gCn = grad_y * hn;
              const V gBn = ln * dtu;
              if (kVarC) gC[i * N + n] = gCn; else accC[n] += gCn;
              if (kVarB) gB[i * N + n] = gBn; else accB[n] += gBn;
              sumB += ln * Bn;
              const V dA = dA_rec[i * N + n];
              const V carry = ln * dA;
              if (keep) {
                const V q = carry * h_prev[n];
                ddt += q * A[n];
                accA[n] += q * dt;
                lam[n] = carry;
              } else {
                lam[n] = V{};
              }
            }
            du[i] = sumB * dt + Dv * grad_y;
            ddt += sumB * u;
            const V dd = s.softplus ? ddt * sigmoid<T>(tl.raw[i]) : ddt;
            ddelta[i] = dd;
            accD += grad_y * u;
            accBias += dd;
          }
          store_tile<T>(s, static_cast<T*>(io.du), geo, pos0, cnt, du.data());
          store_tile<T>(s, static_cast<T*>(io.ddelta), geo, pos0, cnt, ddelta.data());
          if (s.has_z) store_tile<T>(s, static_cast<T*>(io.dz), geo, pos0, cnt, dz.data());
          // Input-dependent dB/dC: sum each step's per-lane terms over the block's channels. The
          // slot's first block writes its rows (the glue leaves them uninitialised), the others add.
          const bool first_of_slot = block == block_lo;
          auto reduce_rows = [&](const Buffer<V>& grad, T* rows) {
            for (int64_t i = 0; i < cnt; ++i) {
              T* row = rows + time_of(s, pos0 + i) * N;
              const V* g = &grad[i * N];
              int64_t n = 0;
              if (first_of_slot) {
                for (; n + W <= N; n += W) store_unaligned<T>(row + n, lane_sums<T>(g + n));
                for (; n < N; ++n) row[n] = horizontal_sum<T>(g[n]);
              } else {
                for (; n + W <= N; n += W) store_unaligned<T>(row + n, load_unaligned<T>(row + n) + lane_sums<T>(g + n));
                for (; n < N; ++n) row[n] += horizontal_sum<T>(g[n]);
              }
            }
          };
          if (s.var_B) reduce_rows(gB, dB_var);
          if (s.var_C) reduce_rows(gC, dC_var);
        }
        if (c_lo > 0) {
          for (int64_t n = 0; n < N; ++n) {
            saved[n] = lam[n];
            saved[N + n] = accA[n];
            saved[2 * N + n] = accB[n];
            saved[3 * N + n] = accC[n];
          }
          saved[4 * N] = accD;
          saved[4 * N + 1] = accBias;
          continue;
        }
        // Lanes past geo.lanes hold zeros; store only the valid ones.
        if (s.has_init) store_state<T>(s, N, io.dinit, geo, 1, 0, lam);
        store_state<T>(s, N, io.dA, geo, 1, 0, accA);
        if (!s.var_B) store_state<T>(s, N, io.dB_const, geo, 1, 0, accB);
        if (!s.var_C) store_state<T>(s, N, io.dC_const, geo, 1, 0, accC);
        for (int64_t w = 0; w < geo.lanes; ++w) {
          if (s.has_D) static_cast<T*>(io.dD)[b * s.dim + geo.d0 + w] = accD[w];
          if (s.has_bias) static_cast<T*>(io.dbias)[b * s.dim + geo.d0 + w] = accBias[w];
        }
      }
    }
  }
}

// Compile-time specialisations: N = 16 (the common case, fully unrolled, states in
// registers) or any N; constant or input-dependent B and C.
template <typename T, int NS>
void forward_by_bc(const ScanShape& s, const ScanInputs& in, const ScanForwardOutputs& out,
                   int64_t begin, int64_t end) {
  if (s.var_B && s.var_C) scan_forward<T, NS, true, true>(s, in, out, begin, end);
  else if (s.var_B) scan_forward<T, NS, true, false>(s, in, out, begin, end);
  else if (s.var_C) scan_forward<T, NS, false, true>(s, in, out, begin, end);
  else scan_forward<T, NS, false, false>(s, in, out, begin, end);
}

template <typename T>
void forward_entry(const ScanShape& s, const ScanInputs& in, const ScanForwardOutputs& out,
                   int64_t begin, int64_t end) {
  if (s.dstate == 16) forward_by_bc<T, 16>(s, in, out, begin, end);
  else forward_by_bc<T, 0>(s, in, out, begin, end);
}

template <typename T, int NS>
void backward_by_bc(const ScanShape& s, const ScanInputs& in, const ScanBackwardIO& io,
                    int64_t begin, int64_t end) {
  if (s.var_B && s.var_C) scan_backward<T, NS, true, true>(s, in, io, begin, end);
  else if (s.var_B) scan_backward<T, NS, true, false>(s, in, io, begin, end);
  else if (s.var_C) scan_backward<T, NS, false, true>(s, in, io, begin, end);
  else scan_backward<T, NS, false, false>(s, in, io, begin, end);
}

template <typename T>
void backward_entry(const ScanShape& s, const ScanInputs& in, const ScanBackwardIO& io,
                    int64_t begin, int64_t end) {
  if (s.dstate == 16) backward_by_bc<T, 16>(s, in, io, begin, end);
  else backward_by_bc<T, 0>(s, in, io, begin, end);
}

// The same per-(t, n) arithmetic as scan_step (one exp2, one multiply, two multiply-adds,
// the y accumulation) for `dstate` states of one vector of channels, with nothing but
// registers: the speed limit of this machine for the scan's maths.
inline float arith_bound(int64_t n_blocks, int64_t len, int64_t dstate, int64_t begin, int64_t end) {
  using V = vec_t<float>;
  constexpr int NS = 16;
  float checksum = 0.f;
  for (int64_t unit = begin; unit < end; ++unit) {
    V h[NS], A2[NS], Bn[NS], Cn[NS];
    for (int n = 0; n < NS; ++n) {
      h[n] = V{};
      A2[n] = splat(-0.5f - 0.01f * n - 0.001f * unit);
      Bn[n] = splat(0.1f + 0.01f * n);
      Cn[n] = splat(0.2f - 0.01f * n);
    }
    V dt = splat(0.01f), u = splat(0.5f), acc{};
    for (int64_t t = 0; t < len; ++t) {
      const V dtu = dt * u;
      V y{};
      for (int64_t n0 = 0; n0 < dstate; n0 += NS) {
        for (int n = 0; n < NS; ++n) {
          V dA = exp2_fast(dt * A2[n]);
          h[n] = h[n] * dA + dtu * Bn[n];
          y += h[n] * Cn[n];
        }
      }
      acc += y;
      dt = dt * 0.999f + 0.0005f;
      u = u * 0.998f + 0.001f;
    }
    checksum += horizontal_sum<float>(acc);
  }
  (void)n_blocks;
  return checksum;
}

inline const ScanKernelTable& make_table(const char* isa) {
  static const ScanKernelTable table = {
      isa,
      Vec<float>::width,
      &forward_entry<float>,
      &forward_entry<double>,
      &backward_entry<float>,
      &backward_entry<double>,
      &arith_bound,
  };
  return table;
}

}  // namespace SMDIM_ISA
}  // namespace smdim
