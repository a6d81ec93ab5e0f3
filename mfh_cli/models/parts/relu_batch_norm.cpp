// The hidden layer's ReLU -> BatchNorm in training mode, forward and backward, fused (mfh_cli/models/parts/fused.py).
//
// Eager PyTorch makes five passes over a layer's [G, B, C] activations forward (ReLU, BatchNorm's statistics and
// normalisation, the copy into BatchNorm's [B, G*C] view) and as many backward; here each direction reads its
// inputs twice (statistics, then the elementwise pass) in blocks of channels that stay in cache between the two.
// Statistics are over the rows B for each (group, channel), accumulated in float over 128-row chunks, then in double:
// closer to a float64 reference than PyTorch's CPU kernel (tests/models/test_fused.py). The batch variance is the
// biased one, as BatchNorm normalises with; the moving statistics are updated in Python (dense.py).
// Memory: z is [G, B, C] contiguous, or a transposed [B, G, C] buffer (rows first); outputs share z's layout.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>
#include <vector>
#include <algorithm>

namespace {
constexpr int64_t CHUNK = 128; // rows summed in float before adding into double

struct Layout { int64_t outer, rows, channels; };

Layout layout_of(const torch::Tensor& z) {
  TORCH_CHECK(z.dim() == 3 && z.scalar_type() == torch::kFloat && z.device().is_cpu(), "relu_batch_norm: float32 CPU [G, B, C] expected");
  auto G = z.size(0), B = z.size(1), C = z.size(2);
  if (z.is_contiguous()) return {G, B, C};
  TORCH_CHECK(z.transpose(0, 1).is_contiguous(), "relu_batch_norm: z must be [G, B, C] or rows-first [B, G, C] memory");
  return {1, B, G * C};
}

// Sums over rows of f(row values) into two double arrays, for a block of W channels (or `width` < W at the tail).
template <int64_t W, typename F>
inline void row_sums(int64_t rows, int64_t stride, int64_t width, double* __restrict first, double* __restrict second, F f) {
  for (int64_t c = 0; c < W; ++c) { first[c] = 0; second[c] = 0; }
  for (int64_t r0 = 0; r0 < rows; r0 += CHUNK) {
    float s[W] = {0}, q[W] = {0};
    const int64_t r1 = std::min(rows, r0 + CHUNK);
    if (width == W) {
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = 0; c < W; ++c) { float a, b; f(r, c, a, b); s[c] += a; q[c] += b; }
    } else {
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = 0; c < width; ++c) { float a, b; f(r, c, a, b); s[c] += a; q[c] += b; }
    }
    for (int64_t c = 0; c < W; ++c) { first[c] += s[c]; second[c] += q[c]; }
  }
}
}  // namespace

template <int64_t W>
std::vector<torch::Tensor> forward_impl(torch::Tensor z, torch::Tensor weight, torch::Tensor bias, double eps) {
  auto L = layout_of(z);
  auto y = torch::empty_like(z);
  auto mean = torch::empty({L.outer * L.channels}, z.options());
  auto invstd = torch::empty({L.outer * L.channels}, z.options());
  const float* zp = z.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  const float* bp = bias.data_ptr<float>();
  float* mp = mean.data_ptr<float>();
  float* ip = invstd.data_ptr<float>();
  const int64_t blocks = (L.channels + W - 1) / W;
  at::parallel_for(0, L.outer * blocks, 1, [&](int64_t begin, int64_t end) {
    alignas(32) double sum[W], sumsq[W];
    alignas(32) float scale[W], shift[W];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t o = task / blocks, c0 = (task % blocks) * W, width = std::min(W, L.channels - c0);
      const int64_t stride = L.channels;
      const float* __restrict in = zp + o * L.rows * stride + c0;
      float* __restrict out = yp + o * L.rows * stride + c0;
      row_sums<W>(L.rows, stride, width, sum, sumsq, [&](int64_t r, int64_t c, float& a, float& b) {
        const float v = std::max(in[r * stride + c], 0.f); a = v; b = v * v; });
      for (int64_t c = 0; c < width; ++c) {
        const double m = sum[c] / L.rows;
        const double var = std::max(sumsq[c] / L.rows - m * m, 0.0);
        const float is = static_cast<float>(1.0 / std::sqrt(var + eps));
        const int64_t p = o * L.channels + c0 + c;
        mp[p] = static_cast<float>(m); ip[p] = is;
        scale[c] = wp[p] * is; shift[c] = bp[p] - static_cast<float>(m) * scale[c];
      }
      for (int64_t r = 0; r < L.rows; ++r)
        for (int64_t c = 0; c < width; ++c) out[r * stride + c] = std::max(in[r * stride + c], 0.f) * scale[c] + shift[c];
    }
  });
  return {y, mean, invstd};
}

template <int64_t W>
std::vector<torch::Tensor> backward_impl(torch::Tensor grad, torch::Tensor z, torch::Tensor weight,
                                                    torch::Tensor mean, torch::Tensor invstd) {
  auto L = layout_of(z);
  auto dz = torch::empty_like(z);
  auto dweight = torch::empty_like(weight);
  auto dbias = torch::empty_like(weight);
  const float* zp = z.data_ptr<float>();
  const float* gp = grad.data_ptr<float>();
  float* dp = dz.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  const float* mp = mean.data_ptr<float>();
  const float* ip = invstd.data_ptr<float>();
  float* dwp = dweight.data_ptr<float>();
  float* dbp = dbias.data_ptr<float>();
  const int64_t blocks = (L.channels + W - 1) / W;
  at::parallel_for(0, L.outer * blocks, 1, [&](int64_t begin, int64_t end) {
    alignas(32) double sg[W], sgx[W];
    alignas(32) float m[W], is[W], k[W], mean_g[W], mean_gx[W];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t o = task / blocks, c0 = (task % blocks) * W, width = std::min(W, L.channels - c0);
      const int64_t stride = L.channels, offset = o * L.rows * stride + c0;
      const float* __restrict zin = zp + offset;
      const float* __restrict gin = gp + offset;
      float* __restrict dout = dp + offset;
      for (int64_t c = 0; c < W; ++c) {
        m[c] = c < width ? mp[o * L.channels + c0 + c] : 0.f; is[c] = c < width ? ip[o * L.channels + c0 + c] : 0.f;
      }
      row_sums<W>(L.rows, stride, width, sg, sgx, [&](int64_t r, int64_t c, float& a, float& b) {
        const float g = gin[r * stride + c];
        a = g; b = g * ((std::max(zin[r * stride + c], 0.f) - m[c]) * is[c]); });
      for (int64_t c = 0; c < width; ++c) {
        const int64_t p = o * L.channels + c0 + c;
        dwp[p] = static_cast<float>(sgx[c]); dbp[p] = static_cast<float>(sg[c]);
        k[c] = wp[p] * is[c];
        mean_g[c] = static_cast<float>(sg[c] / L.rows);
        mean_gx[c] = static_cast<float>(sgx[c] / L.rows);
      }
      for (int64_t r = 0; r < L.rows; ++r)
        for (int64_t c = 0; c < width; ++c) {
          const float zv = zin[r * stride + c];
          const float xhat = (std::max(zv, 0.f) - m[c]) * is[c];
          const float d = k[c] * (gin[r * stride + c] - mean_g[c] - xhat * mean_gx[c]);
          dout[r * stride + c] = zv > 0.f ? d : 0.f;
        }
    }
  });
  return {dz, dweight, dbias};
}

std::vector<torch::Tensor> relu_batch_norm_forward(torch::Tensor z, torch::Tensor weight, torch::Tensor bias, double eps) {
  return layout_of(z).channels >= 256 ? forward_impl<128>(z, weight, bias, eps) : forward_impl<32>(z, weight, bias, eps);
}
std::vector<torch::Tensor> relu_batch_norm_backward(torch::Tensor grad, torch::Tensor z, torch::Tensor weight, torch::Tensor mean, torch::Tensor invstd) {
  return layout_of(z).channels >= 256 ? backward_impl<128>(grad, z, weight, mean, invstd) : backward_impl<32>(grad, z, weight, mean, invstd);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &relu_batch_norm_forward);
  m.def("backward", &relu_batch_norm_backward);
}
