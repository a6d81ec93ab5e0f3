// The hidden layer's ReLU -> BatchNorm in training mode, forward and backward, fused (mfh_cli/models/parts/fused.py).
//
// Eager PyTorch makes about five passes over a layer's [G, B, C] activations forward (ReLU, BatchNorm's statistics
// and normalisation, the copy into BatchNorm's [B, G*C] view) and as many backward; here each direction reads its
// inputs twice: a statistics pass, then one elementwise pass. Both stream whole rows of channels.
// Statistics are over the rows B for each (group, channel): summed in float over fixed chunks of 128 rows, then the
// chunks in order in double, so the result does not depend on the thread count, and is closer to a float64
// reference than PyTorch's CPU kernel (tests/models/parts/test_fused.py). The variance is the biased batch variance
// BatchNorm normalises with; the moving statistics are updated in Python (dense.py).
// Memory: z is [G, B, C] contiguous, or a transposed [B, G, C] buffer (rows first); outputs share z's layout.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <vector>

namespace {
constexpr int64_t CHUNK = 128;  // rows summed in float before the chunks are added in double

// outer independent matrices of rows x channels, stats per (outer, channel) over rows
struct Layout { int64_t outer, rows, channels; };

Layout layout_of(const torch::Tensor& z) {
  TORCH_CHECK(z.dim() == 3 && z.scalar_type() == torch::kFloat && z.device().is_cpu(),
              "relu_batch_norm: a float32 CPU [G, B, C] tensor expected");
  auto G = z.size(0), B = z.size(1), C = z.size(2);
  if (z.is_contiguous()) return {G, B, C};
  TORCH_CHECK(z.transpose(0, 1).is_contiguous(), "relu_batch_norm: z must be [G, B, C] or rows-first [B, G, C] memory");
  return {1, B, G * C};
}

// Two per-(outer, channel) sums over rows of f(o, r, c) -> (a, b), in double: float within each chunk of rows
// (chunks in parallel), then the chunks added in order.
template <typename F>
void row_sums(const Layout& L, std::vector<double>& first, std::vector<double>& second, F f) {
  const int64_t chunks = (L.rows + CHUNK - 1) / CHUNK, C = L.channels;
  std::vector<float> partial(static_cast<size_t>(L.outer * chunks * 2 * C));
  at::parallel_for(0, L.outer * chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t o = task / chunks, r0 = (task % chunks) * CHUNK, r1 = std::min(L.rows, r0 + CHUNK);
      float* __restrict s = partial.data() + task * 2 * C;
      float* __restrict q = s + C;
      std::fill(s, s + 2 * C, 0.f);
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = 0; c < C; ++c) { float a, b; f(o, r, c, a, b); s[c] += a; q[c] += b; }
    }
  });
  first.assign(static_cast<size_t>(L.outer * C), 0.0);
  second.assign(static_cast<size_t>(L.outer * C), 0.0);
  for (int64_t o = 0; o < L.outer; ++o)
    for (int64_t k = 0; k < chunks; ++k) {
      const float* s = partial.data() + (o * chunks + k) * 2 * C;
      for (int64_t c = 0; c < C; ++c) { first[o * C + c] += s[c]; second[o * C + c] += s[C + c]; }
    }
}

// f(row) for rows 0 .. count-1, in parallel chunks of CHUNK rows (each row is independent work).
template <typename F>
void for_each_row(int64_t count, F f) {
  at::parallel_for(0, count, CHUNK, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) f(row);
  });
}

// g(o, r) for every row of every outer matrix.
template <typename G>
void elementwise(const Layout& L, G g) {
  for_each_row(L.outer * L.rows, [&](int64_t row) { g(row / L.rows, row % L.rows); });
}
}  // namespace

std::vector<torch::Tensor> relu_batch_norm_forward(torch::Tensor z, torch::Tensor weight, torch::Tensor bias,
                                                   double eps) {
  const Layout L = layout_of(z);
  const int64_t C = L.channels, R = L.rows;
  auto y = torch::empty_like(z);
  auto mean = torch::empty({L.outer * C}, z.options());
  auto invstd = torch::empty({L.outer * C}, z.options());
  const float* zp = z.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  std::vector<double> sum, sumsq;
  row_sums(L, sum, sumsq, [&](int64_t o, int64_t r, int64_t c, float& a, float& b) {
    const float v = std::max(zp[(o * R + r) * C + c], 0.f); a = v; b = v * v; });
  std::vector<float> scale(L.outer * C), shift(L.outer * C);
  const float* wp = weight.data_ptr<float>();
  const float* bp = bias.data_ptr<float>();
  float* mp = mean.data_ptr<float>();
  float* ip = invstd.data_ptr<float>();
  for (int64_t p = 0; p < L.outer * C; ++p) {
    const double m = sum[p] / R, var = std::max(sumsq[p] / R - m * m, 0.0);
    const float is = static_cast<float>(1.0 / std::sqrt(var + eps));
    mp[p] = static_cast<float>(m); ip[p] = is;
    scale[p] = wp[p] * is; shift[p] = bp[p] - static_cast<float>(m) * scale[p];
  }
  elementwise(L, [&](int64_t o, int64_t r) {
    const float* __restrict in = zp + (o * R + r) * C;
    float* __restrict out = yp + (o * R + r) * C;
    const float* __restrict k = scale.data() + o * C;
    const float* __restrict h = shift.data() + o * C;
    for (int64_t c = 0; c < C; ++c) out[c] = std::max(in[c], 0.f) * k[c] + h[c];
  });
  return {y, mean, invstd};
}

std::vector<torch::Tensor> relu_batch_norm_backward(torch::Tensor grad, torch::Tensor z, torch::Tensor weight,
                                                    torch::Tensor mean, torch::Tensor invstd) {
  const Layout L = layout_of(z);
  TORCH_CHECK(grad.strides() == z.strides(), "relu_batch_norm: the gradient must have z's layout");
  const int64_t C = L.channels, R = L.rows;
  auto dz = torch::empty_like(z);
  auto dweight = torch::empty_like(weight);
  auto dbias = torch::empty_like(weight);
  const float* zp = z.data_ptr<float>();
  const float* gp = grad.data_ptr<float>();
  const float* mp = mean.data_ptr<float>();
  const float* ip = invstd.data_ptr<float>();
  std::vector<double> sg, sgx;
  row_sums(L, sg, sgx, [&](int64_t o, int64_t r, int64_t c, float& a, float& b) {
    const int64_t at = (o * R + r) * C + c, p = o * C + c;
    a = gp[at]; b = gp[at] * ((std::max(zp[at], 0.f) - mp[p]) * ip[p]); });
  std::vector<float> k(L.outer * C), mean_g(L.outer * C), mean_gx(L.outer * C);
  const float* wp = weight.data_ptr<float>();
  float* dwp = dweight.data_ptr<float>();
  float* dbp = dbias.data_ptr<float>();
  for (int64_t p = 0; p < L.outer * C; ++p) {
    dwp[p] = static_cast<float>(sgx[p]); dbp[p] = static_cast<float>(sg[p]);
    k[p] = wp[p] * ip[p];
    mean_g[p] = static_cast<float>(sg[p] / R); mean_gx[p] = static_cast<float>(sgx[p] / R);
  }
  float* dp = dz.data_ptr<float>();
  elementwise(L, [&](int64_t o, int64_t r) {
    const float* __restrict zr = zp + (o * R + r) * C;
    const float* __restrict gr = gp + (o * R + r) * C;
    float* __restrict dr = dp + (o * R + r) * C;
    const float *m = mp + o * C, *is = ip + o * C, *kk = k.data() + o * C, *mg = mean_g.data() + o * C,
                *mgx = mean_gx.data() + o * C;
    for (int64_t c = 0; c < C; ++c) {
      const float xhat = (std::max(zr[c], 0.f) - m[c]) * is[c];
      const float d = kk[c] * (gr[c] - mg[c] - xhat * mgx[c]);
      dr[c] = zr[c] > 0.f ? d : 0.f;
    }
  });
  return {dz, dweight, dbias};
}

// Gated mixing of experts (gates.py mix_experts): out[s,b,k,:] = sum_e weights[s,b,k,e] * experts[s,b,e,:].
// One small product per row: PyTorch's batched matmul spends most of its time per problem on problems this small.
// weights [S, B, K, E] contiguous; experts [S, B, E, H] in any dense layout with unit stride along H (rows first
// included); the experts' gradient is written in the experts' layout.
namespace {
struct Rows { int64_t S, B, K, E, H, s0, s1, s2; };

// sum_h a[h] * b[h] in eight independent lanes (vectorised without reassociating a float sum), then the lanes
float dot(const float* __restrict a, const float* __restrict b, int64_t n) {
  float lanes[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  int64_t h = 0;
  for (; h + 8 <= n; h += 8)
    for (int j = 0; j < 8; ++j) lanes[j] += a[h + j] * b[h + j];
  float tail = 0.f;
  for (; h < n; ++h) tail += a[h] * b[h];
  return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7])) + tail;
}

Rows rows_of(const torch::Tensor& weights, const torch::Tensor& experts) {
  TORCH_CHECK(weights.is_contiguous() && experts.stride(3) == 1 && experts.scalar_type() == torch::kFloat &&
              weights.scalar_type() == torch::kFloat,
              "mix_experts: float32 weights [S,B,K,E] contiguous and experts [S,B,E,H] with unit stride along H expected");
  return {experts.size(0), experts.size(1), weights.size(2), experts.size(2), experts.size(3),
          experts.stride(0), experts.stride(1), experts.stride(2)};
}
}  // namespace

torch::Tensor dense_rows(const torch::Tensor& experts) {
  return experts.stride(3) == 1 && experts.is_non_overlapping_and_dense() ? experts : experts.contiguous();
}

torch::Tensor mix_forward(torch::Tensor weights, torch::Tensor experts) {
  experts = dense_rows(experts);
  const Rows D = rows_of(weights, experts);
  auto out = torch::empty({D.S, D.B, D.K, D.H}, experts.options());
  const float* wp = weights.data_ptr<float>();
  const float* xp = experts.data_ptr<float>();
  float* op = out.data_ptr<float>();
  for_each_row(D.S * D.B, [&](int64_t row) {
    const float* x = xp + (row / D.B) * D.s0 + (row % D.B) * D.s1;
    const float* w = wp + row * D.K * D.E;
    float* o = op + row * D.K * D.H;
    for (int64_t k = 0; k < D.K; ++k) {
      float* __restrict ok = o + k * D.H;
      std::fill(ok, ok + D.H, 0.f);
      for (int64_t e = 0; e < D.E; ++e) {
        const float we = w[k * D.E + e];
        if (we == 0.f) continue;  // another branch's expert (a structural zero of the weights)
        const float* __restrict xe = x + e * D.s2;
        for (int64_t h = 0; h < D.H; ++h) ok[h] += we * xe[h];
      }
    }
  });
  return out;
}

std::vector<torch::Tensor> mix_backward(torch::Tensor grad, torch::Tensor weights, torch::Tensor experts) {
  experts = dense_rows(experts);
  const Rows D = rows_of(weights, experts);
  grad = grad.contiguous();
  auto dweights = torch::empty_like(weights);
  auto dexperts = torch::empty_like(experts);  // experts' layout: the layer that made them reads it without a copy
  const float* gp = grad.data_ptr<float>();
  const float* wp = weights.data_ptr<float>();
  const float* xp = experts.data_ptr<float>();
  float* dwp = dweights.data_ptr<float>();
  float* dxp = dexperts.data_ptr<float>();
  for_each_row(D.S * D.B, [&](int64_t row) {
    const int64_t at = (row / D.B) * D.s0 + (row % D.B) * D.s1;  // this row's experts (and their gradient)
    const float* x = xp + at;
    const float* g = gp + row * D.K * D.H;
    const float* w = wp + row * D.K * D.E;
    float* dw = dwp + row * D.K * D.E;
    float* dx = dxp + at;
    for (int64_t e = 0; e < D.E; ++e) {
      const float* __restrict xe = x + e * D.s2;
      float* __restrict dxe = dx + e * D.s2;
      std::fill(dxe, dxe + D.H, 0.f);
      for (int64_t k = 0; k < D.K; ++k) {
        const float* __restrict gk = g + k * D.H;
        dw[k * D.E + e] = dot(gk, xe, D.H);
        const float we = w[k * D.E + e];
        if (we == 0.f) continue;
        for (int64_t h = 0; h < D.H; ++h) dxe[h] += we * gk[h];
      }
    }
  });
  return {dweights, dexperts};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &relu_batch_norm_forward);
  m.def("backward", &relu_batch_norm_backward);
  m.def("mix_forward", &mix_forward);
  m.def("mix_backward", &mix_backward);
}
