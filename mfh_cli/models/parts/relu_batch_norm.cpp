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

// Eval mode: z <- max(z, 0) * scale + shift in place (BatchNorm with its moving statistics folded into one scale
// and shift per channel, dense.py), one pass instead of eager's ReLU, BatchNorm and the copy into its view.
torch::Tensor relu_affine_(torch::Tensor z, torch::Tensor scale, torch::Tensor shift) {
  const Layout L = layout_of(z);
  TORCH_CHECK(scale.is_contiguous() && shift.is_contiguous() && scale.numel() == L.outer * L.channels &&
              shift.numel() == scale.numel(), "relu_affine_: one scale and shift per (group, channel) expected");
  const int64_t C = L.channels, R = L.rows;
  float* zp = z.data_ptr<float>();
  const float* kp = scale.data_ptr<float>();
  const float* hp = shift.data_ptr<float>();
  elementwise(L, [&](int64_t o, int64_t r) {
    float* __restrict row = zp + (o * R + r) * C;
    const float* __restrict k = kp + o * C;
    const float* __restrict h = hp + o * C;
    for (int64_t c = 0; c < C; ++c) row[c] = std::max(row[c], 0.f) * k[c] + h[c];
  });
  return z;
}

// Gated mixing of experts with the gates' softmax (gates.py gated_mix), for each row (s, b):
//   branch k: w = softmax(branch_scores[s,b,k,:C]); out[s,b,k,:] = sum_c w[c] * experts[s,b,e(k,c),:], where
//   e(k,c) = k*P + c for c < P (branch k's own P experts) and K*P + c - P for the rest (the shared experts);
//   shared gate (optional): v = softmax(shared_scores[s,b,:E]); shared[s,b,:] = sum_e v[e] * experts[s,b,e,:].
// One loop over the rows: per row this is a few tiny products, on which PyTorch's batched matmul and its softmax
// over a last dimension of 2-8 spend most of their time per problem; here the weights are never built as an
// [S,B,K,E] block matrix with zeros for the other branches' experts, and no product is formed with those zeros.
// Scores [S,B,K,C] and [S,B,E] contiguous; experts [S,B,E,H] in any dense layout with unit stride along H (rows
// first included), the outputs' gradients in any layout with unit stride along H; the experts' gradient is written
// in the experts' layout.
namespace {
struct Mix { int64_t S, B, K, C, E, H, P, s0, s1, s2; bool shared; };

Mix mix_of(const torch::Tensor& branch_scores, const torch::Tensor& shared_scores, const torch::Tensor& experts,
           int64_t per_branch) {
  TORCH_CHECK(branch_scores.is_contiguous() && branch_scores.dim() == 4 && experts.dim() == 4 &&
              experts.stride(3) == 1 && experts.scalar_type() == torch::kFloat &&
              branch_scores.scalar_type() == torch::kFloat,
              "gated_mix: float32 scores [S,B,K,C] contiguous and experts [S,B,E,H] with unit stride along H expected");
  const bool shared = shared_scores.numel() > 0;
  TORCH_CHECK(!shared || (shared_scores.is_contiguous() && shared_scores.numel() == experts.size(0) *
              experts.size(1) * experts.size(2)), "gated_mix: shared scores [S,B,E] contiguous expected");
  const int64_t K = branch_scores.size(2), C = branch_scores.size(3), E = experts.size(2);
  TORCH_CHECK(K * per_branch + C - per_branch == E, "gated_mix: K*P + shared experts must equal E");
  return {experts.size(0), experts.size(1), K, C, E, experts.size(3), per_branch,
          experts.stride(0), experts.stride(1), experts.stride(2), shared};
}

// w = softmax(x) over n values: the largest subtracted, exponentials, then times the reciprocal of their sum
inline void softmax_row(const float* __restrict x, float* __restrict w, int64_t n) {
  float largest = x[0];
  for (int64_t i = 1; i < n; ++i) largest = std::max(largest, x[i]);
  float sum = 0.f;
  for (int64_t i = 0; i < n; ++i) { w[i] = std::exp(x[i] - largest); sum += w[i]; }
  const float reciprocal = 1.f / sum;
  for (int64_t i = 0; i < n; ++i) w[i] *= reciprocal;
}

// sum_h a[h] * b[h] in eight independent lanes (vectorised without reassociating a float sum), then the lanes
inline float dot(const float* __restrict a, const float* __restrict b, int64_t n) {
  float lanes[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  int64_t h = 0;
  for (; h + 8 <= n; h += 8)
    for (int j = 0; j < 8; ++j) lanes[j] += a[h + j] * b[h + j];
  float tail = 0.f;
  for (; h < n; ++h) tail += a[h] * b[h];
  return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7])) + tail;
}

// out[:H] = sum_i w[i] * x[expert(i)][:H] over n experts
template <typename Expert>
inline void weighted_sum(const float* x, int64_t s2, const float* w, int64_t n, int64_t H, float* __restrict out,
                         Expert expert) {
  std::fill(out, out + H, 0.f);
  for (int64_t i = 0; i < n; ++i) {
    const float wi = w[i];
    const float* __restrict xe = x + expert(i) * s2;
    for (int64_t h = 0; h < H; ++h) out[h] += wi * xe[h];
  }
}

// Backward of out = sum_i softmax(scores)[i] * x[expert(i)] for one gate of one row: the scores' gradient into ds
// (which first holds the weights' gradient), the experts' gradient added into dx.
template <typename Expert>
inline void weighted_sum_backward(const float* x, float* dx, int64_t s2, const float* w, const float* g, int64_t n,
                                  int64_t H, float* __restrict ds, Expert expert) {
  float total = 0.f;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t e = expert(i);
    ds[i] = dot(g, x + e * s2, H);
    total += w[i] * ds[i];
    const float wi = w[i];
    float* __restrict dxe = dx + e * s2;
    for (int64_t h = 0; h < H; ++h) dxe[h] += wi * g[h];
  }
  for (int64_t i = 0; i < n; ++i) ds[i] = w[i] * (ds[i] - total);  // softmax's backward
}

// f(row, offset of the row's experts) for the S*B rows, in parallel chunks of rows (for_each_row).
template <typename F>
void for_each_mix_row(const Mix& D, F f) {
  for_each_row(D.S * D.B, [&](int64_t row) { f(row, (row / D.B) * D.s0 + (row % D.B) * D.s1); });
}
}  // namespace

torch::Tensor dense_rows(const torch::Tensor& experts) {
  return experts.stride(3) == 1 && experts.is_non_overlapping_and_dense() ? experts : experts.contiguous();
}

// -> branch outputs [S,B,K,H], shared output [S,B,H] (empty without a shared gate), and the softmax weights of
// both gates (kept for backward)
std::vector<torch::Tensor> gated_mix_forward(torch::Tensor branch_scores, torch::Tensor shared_scores,
                                             torch::Tensor experts, int64_t per_branch) {
  experts = dense_rows(experts);
  const Mix D = mix_of(branch_scores, shared_scores, experts, per_branch);
  auto out = torch::empty({D.S, D.B, D.K, D.H}, experts.options());
  auto branch_weights = torch::empty_like(branch_scores);
  auto shared_out = torch::empty({D.shared ? D.S : 0, D.B, D.H}, experts.options());
  auto shared_weights = torch::empty_like(shared_scores);
  const float* sp = branch_scores.data_ptr<float>();
  const float* tp = D.shared ? shared_scores.data_ptr<float>() : nullptr;
  const float* xp = experts.data_ptr<float>();
  float* op = out.data_ptr<float>();
  float* wp = branch_weights.data_ptr<float>();
  float* sop = D.shared ? shared_out.data_ptr<float>() : nullptr;
  float* swp = D.shared ? shared_weights.data_ptr<float>() : nullptr;
  for_each_mix_row(D, [&](int64_t row, int64_t at) {
    const float* x = xp + at;
    for (int64_t k = 0; k < D.K; ++k) {
      const int64_t gate = row * D.K + k;
      softmax_row(sp + gate * D.C, wp + gate * D.C, D.C);
      weighted_sum(x, D.s2, wp + gate * D.C, D.C, D.H, op + gate * D.H, [&](int64_t c) {
        return c < D.P ? k * D.P + c : D.K * D.P + c - D.P; });
    }
    if (D.shared) {
      softmax_row(tp + row * D.E, swp + row * D.E, D.E);
      weighted_sum(x, D.s2, swp + row * D.E, D.E, D.H, sop + row * D.H, [](int64_t e) { return e; });
    }
  });
  return {out, shared_out, branch_weights, shared_weights};
}

// -> gradients of the branch scores, the shared scores (empty without a shared gate) and the experts
std::vector<torch::Tensor> gated_mix_backward(torch::Tensor grad, torch::Tensor shared_grad,
                                              torch::Tensor branch_weights, torch::Tensor shared_weights,
                                              torch::Tensor experts, int64_t per_branch) {
  experts = dense_rows(experts);
  const Mix D = mix_of(branch_weights, shared_weights, experts, per_branch);
  if (grad.stride(3) != 1) grad = grad.contiguous();  // read in its own layout: only H must be dense
  const int64_t g0 = grad.stride(0), g1 = grad.stride(1), g2 = grad.stride(2);
  auto dbranch = torch::empty_like(branch_weights);
  auto dshared = torch::empty_like(shared_weights);
  auto dexperts = torch::empty_like(experts);  // experts' layout: the layer that made them reads it without a copy
  if (D.shared && shared_grad.stride(2) != 1) shared_grad = shared_grad.contiguous();
  const int64_t h0 = D.shared ? shared_grad.stride(0) : 0, h1 = D.shared ? shared_grad.stride(1) : 0;
  const float* gp = grad.data_ptr<float>();
  const float* sgp = D.shared ? shared_grad.data_ptr<float>() : nullptr;
  const float* wp = branch_weights.data_ptr<float>();
  const float* swp = D.shared ? shared_weights.data_ptr<float>() : nullptr;
  const float* xp = experts.data_ptr<float>();
  float* dbp = dbranch.data_ptr<float>();
  float* dsp = D.shared ? dshared.data_ptr<float>() : nullptr;
  float* dxp = dexperts.data_ptr<float>();
  for_each_mix_row(D, [&](int64_t row, int64_t at) {  // `at`: this row's experts (and their gradient)
    const float* x = xp + at;
    float* dx = dxp + at;
    for (int64_t e = 0; e < D.E; ++e) std::fill(dx + e * D.s2, dx + e * D.s2 + D.H, 0.f);
    for (int64_t k = 0; k < D.K; ++k) {
      const int64_t gate = row * D.K + k;
      const float* g = gp + (row / D.B) * g0 + (row % D.B) * g1 + k * g2;
      weighted_sum_backward(x, dx, D.s2, wp + gate * D.C, g, D.C, D.H, dbp + gate * D.C,
                            [&](int64_t c) { return c < D.P ? k * D.P + c : D.K * D.P + c - D.P; });
    }
    if (D.shared)
      weighted_sum_backward(x, dx, D.s2, swp + row * D.E, sgp + (row / D.B) * h0 + (row % D.B) * h1, D.E, D.H,
                            dsp + row * D.E, [](int64_t e) { return e; });
  });
  return {dbranch, dshared, dexperts};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &relu_batch_norm_forward);
  m.def("backward", &relu_batch_norm_backward);
  m.def("relu_affine_", &relu_affine_);
  m.def("gated_mix_forward", &gated_mix_forward);
  m.def("gated_mix_backward", &gated_mix_backward);
}
