// The Transformer feed-forward y = act(x W1^T + b1) W2^T + b2 (Vaswani et al. 2017; GELU: Hendrycks & Gimpel
// 2016) on the CPU in float32, in blocks of rows: each block's hidden activations are computed, used by the
// second product and left while still in cache, so only x, the pre-activation h (kept for the backward) and
// y cross memory. The backward takes the same blocks: act(h) and act'(h) again, the gradient of h used by
// both of its products in cache, weight and bias gradients summed per thread and then across threads in a
// fixed order. Products by the BLAS sgemm that PyTorch itself links (MKL on x86-64). Built at first use by
// attnlab/kernels.py; the reference is nn.Sequential(Linear, GELU | ReLU, Linear) (tests/test_kernels.py).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

extern "C" void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*, const float*,
                       const int*, const float*, const int*, const float*, float*, const int*);

namespace {

constexpr int64_t RF = 256, RB = 64;  // rows per block, forward and backward
constexpr int64_t RELU = 0, GELU = 1;

// row-major C (m x n, ldc) = alpha * op(A) op(B) + beta * C, op(A) m x k, op(B) k x n
inline void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
                 int64_t ldb, float beta, float* c, int64_t ldc) {
  const char tA = ta ? 'T' : 'N', tB = tb ? 'T' : 'N';
  const int M = (int)m, N = (int)n, K = (int)k, LDA = (int)lda, LDB = (int)ldb, LDC = (int)ldc;
  const float one = 1.f;
  sgemm_(&tB, &tA, &N, &M, &K, &one, b, &LDB, a, &LDA, &beta, c, &LDC);  // column-major C^T = B^T A^T
}

// erf(z) by Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7), the approximation PyTorch's vectorized CPU erf
// (and so its GELU) uses; e = exp(-z^2) given, shared with the normal density in the backward
inline float erf_as(float z, float e) {
  const float t = 1.f / (1.f + 0.3275911f * std::fabs(z));
  const float r = ((((1.061405429f * t - 1.453152027f) * t + 1.421413741f) * t - 0.284496736f) * t + 0.254829592f) * t;
  return std::copysign(1.f - r * e, z);
}

// a = act(h) over n values; with da: da = act'(h) as well
inline void activate(const float* h, float* a, float* da, int64_t n, int64_t act) {
  if (act == RELU) {
    for (int64_t i = 0; i < n; ++i) a[i] = h[i] < 0.f ? 0.f : h[i];  // NaN stays NaN, as torch.relu's
    if (da != nullptr)
      for (int64_t i = 0; i < n; ++i) da[i] = h[i] > 0.f ? 1.f : 0.f;
    return;
  }
  constexpr float kRsqrt2 = 0.70710678118654752f, kRsqrt2Pi = 0.39894228040143268f;
  if (da == nullptr) {
    for (int64_t i = 0; i < n; ++i) {  // gelu(x) = x Phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2
      const float z = h[i] * kRsqrt2;
      a[i] = h[i] * (0.5f * (1.f + erf_as(z, std::exp(-std::min(z * z, 80.f)))));
    }
    return;
  }
  for (int64_t i = 0; i < n; ++i) {  // gelu'(x) = Phi(x) + x phi(x): one exp for erf and the density
    const float z = h[i] * kRsqrt2, e = std::exp(-std::min(z * z, 80.f));
    const float cdf = 0.5f * (1.f + erf_as(z, e));
    a[i] = h[i] * cdf;
    da[i] = cdf + h[i] * kRsqrt2Pi * e;
  }
}

void check(const at::Tensor& t, const char* name, int64_t rows, int64_t cols) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous(), name,
              ": a contiguous float32 CPU tensor");
  TORCH_CHECK(cols < 0 ? (t.dim() == 1 && t.size(0) == rows) : (t.dim() == 2 && t.size(0) == rows && t.size(1) == cols),
              name, ": wrong shape");
}

}  // namespace

// x (M, d), w1 (f, d), b1 (f), w2 (d, f), b2 (d) -> y (M, d), h = x w1^T + b1 (M, f) (empty unless keep_h)
std::vector<at::Tensor> mlp_forward(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1,
                                    const at::Tensor& w2, const at::Tensor& b2, int64_t act, bool keep_h) {
  TORCH_CHECK(act == RELU || act == GELU, "act: 0 (relu) or 1 (gelu)");
  TORCH_CHECK(x.dim() == 2, "x: (M, d)");
  const int64_t M = x.size(0), d = x.size(1), f = w1.size(0);
  check(x, "x", M, d); check(w1, "w1", f, d); check(b1, "b1", f, -1); check(w2, "w2", d, f); check(b2, "b2", d, -1);
  auto y = at::empty({M, d}, x.options());
  auto h = keep_h ? at::empty({M, f}, x.options()) : at::empty({0}, x.options());
  const float *X = x.data_ptr<float>(), *W1 = w1.data_ptr<float>(), *B1 = b1.data_ptr<float>(),
              *W2 = w2.data_ptr<float>(), *B2 = b2.data_ptr<float>();
  float* Y = y.data_ptr<float>();
  at::parallel_for(0, (M + RF - 1) / RF, 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> hs(keep_h ? 0 : RF * f), as(RF * f);
    for (int64_t blk = lo; blk < hi; ++blk) {
      const int64_t r0 = blk * RF, m = std::min(RF, M - r0);
      float* H = keep_h ? h.data_ptr<float>() + r0 * f : hs.data();
      gemm(false, true, m, f, d, X + r0 * d, d, W1, d, 0.f, H, f);  // h = x W1^T
      for (int64_t r = 0; r < m; ++r)
        for (int64_t j = 0; j < f; ++j) H[r * f + j] += B1[j];      // + b1
      activate(H, as.data(), nullptr, m * f, act);                  // a = act(h)
      float* Yb = Y + r0 * d;
      for (int64_t r = 0; r < m; ++r) std::copy(B2, B2 + d, Yb + r * d);
      gemm(false, true, m, d, f, as.data(), f, W2, f, 1.f, Yb, d);  // y = b2 + a W2^T
    }
  });
  return {y, h};
}

// the gradients (dx, dw1, db1, dw2, db2) from dy (M, d) and the forward's x, h
std::vector<at::Tensor> mlp_backward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& h,
                                     const at::Tensor& w1, const at::Tensor& w2, int64_t act) {
  TORCH_CHECK(act == RELU || act == GELU, "act: 0 (relu) or 1 (gelu)");
  TORCH_CHECK(x.dim() == 2, "x: (M, d)");
  const int64_t M = x.size(0), d = x.size(1), f = w1.size(0);
  check(dy, "dy", M, d); check(x, "x", M, d); check(h, "h", M, f); check(w1, "w1", f, d); check(w2, "w2", d, f);
  const int64_t nthreads = at::get_num_threads(), nblocks = (M + RB - 1) / RB;
  // per-thread partial sums, then summed in thread order: [dw1 (f d) | db1 (f) | dw2 (d f) | db2 (d)]
  const int64_t width = f * d + f + d * f + d;
  auto partial = at::zeros({nthreads, width}, x.options());
  auto dx = at::empty({M, d}, x.options());
  const float *DY = dy.data_ptr<float>(), *X = x.data_ptr<float>(), *Hp = h.data_ptr<float>(),
              *W1 = w1.data_ptr<float>(), *W2 = w2.data_ptr<float>();
  float* DX = dx.data_ptr<float>();
  at::parallel_for(0, nblocks, 1, [&](int64_t lo, int64_t hi) {
    float* acc = partial.data_ptr<float>() + at::get_thread_num() * width;
    float *DW1 = acc, *DB1 = acc + f * d, *DW2 = DB1 + f, *DB2 = DW2 + d * f;
    std::vector<float> as(RB * f), gs(RB * f), dh(RB * f);
    for (int64_t blk = lo; blk < hi; ++blk) {
      const int64_t r0 = blk * RB, m = std::min(RB, M - r0);
      const float *H = Hp + r0 * f, *G = DY + r0 * d, *Xb = X + r0 * d;
      activate(H, as.data(), gs.data(), m * f, act);                      // a, act'(h)
      gemm(false, false, m, f, d, G, d, W2, f, 0.f, dh.data(), f);         // da = dy W2
      gemm(true, false, d, f, m, G, d, as.data(), f, 1.f, DW2, f);         // dW2 += dy^T a
      for (int64_t r = 0; r < m; ++r)
        for (int64_t j = 0; j < d; ++j) DB2[j] += G[r * d + j];            // db2 += sum dy
      for (int64_t i = 0; i < m * f; ++i) dh[i] *= gs[i];                  // dh = da act'(h)
      for (int64_t r = 0; r < m; ++r)
        for (int64_t j = 0; j < f; ++j) DB1[j] += dh[r * f + j];           // db1 += sum dh
      gemm(true, false, f, d, m, dh.data(), f, Xb, d, 1.f, DW1, d);        // dW1 += dh^T x
      gemm(false, false, m, d, f, dh.data(), f, W1, d, 0.f, DX + r0 * d, d);  // dx = dh W1
    }
  });
  auto total = partial.sum(0);  // (width,), threads summed in order
  return {dx, total.narrow(0, 0, f * d).view({f, d}), total.narrow(0, f * d, f),
          total.narrow(0, f * d + f, d * f).view({d, f}), total.narrow(0, f * d + f + d * f, d)};
}

TORCH_LIBRARY(attnlab_mlp, m) {
  m.def("mlp_forward(Tensor x, Tensor w1, Tensor b1, Tensor w2, Tensor b2, int act, bool keep_h) -> Tensor[]",
        mlp_forward);
  m.def("mlp_backward(Tensor dy, Tensor x, Tensor h, Tensor w1, Tensor w2, int act) -> Tensor[]", mlp_backward);
}
