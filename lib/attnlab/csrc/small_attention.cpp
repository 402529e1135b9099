// Exact softmax attention on the CPU (Vaswani et al. 2017), float32, straight from a fused (B, T, 3, H, D)
// projection: per (batch, head) pair, q and k are turned by the rotary table (RoFormer eq. 34) into a cached
// (T, D) copy, v is read in place, an additive bias (H, T, T) (ALiBi, T5, KERPLE, FIRE) joins the scores.
// Row blocks of BQ queries: a causal block multiplies only the keys it sees; the probabilities of a block
// live in cache and only the rows' log-sum-exp is kept, the backward computes them again (Dao et al. 2022)
// and turns the gradient of q and k back into one (B, T, 3, H, D) buffer; the bias gradient is summed per
// thread, then across threads in a fixed order. Products by the BLAS sgemm that PyTorch itself links (MKL
// on x86-64). Built at first use by attnlab/kernels.py; the reference is the eager attention
// (tests/test_kernels.py).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

extern "C" void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*, const float*,
                       const int*, const float*, const int*, const float*, float*, const int*);

namespace {

constexpr int64_t BQ = 32;  // query rows per block

// row-major C (m x n, ldc) = alpha * op(A) op(B) + beta * C, op(A) m x k, op(B) k x n
inline void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                 const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  const char tA = ta ? 'T' : 'N', tB = tb ? 'T' : 'N';
  const int M = (int)m, N = (int)n, K = (int)k, LDA = (int)lda, LDB = (int)ldb, LDC = (int)ldc;
  sgemm_(&tB, &tA, &N, &M, &K, &alpha, b, &LDB, a, &LDA, &beta, c, &LDC);  // column-major C^T = B^T A^T
}

// S rows [r0, r1) of width w += bias rows (T columns)
inline void add_bias(float* S, int64_t lds, const float* bias, int64_t T, int64_t r0, int64_t r1, int64_t w) {
  for (int64_t r = r0; r < r1; ++r) {
    float* row = S + (r - r0) * lds;
    const float* b = bias + r * T;
    for (int64_t c = 0; c < w; ++c) row[c] += b[c];
  }
}

// NaN or +inf, by its bits (built with -ffast-math, a comparison could be folded away)
inline bool poisoned(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return (u & 0x7fffffffu) > 0x7f800000u || u == 0x7f800000u;
}

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// P rows [r0, r1) of width w (scores in, exp(score - row max) out; the rows' 1 / sum into inv, to scale the
// product P V instead of P), row r sees keys [0, n(r)); zeros beyond; the rows' log-sum-exp into lse[r]. A
// row with a NaN or +inf score gives NaN (as the eager softmax does).
inline void softmax_rows(float* P, int64_t ldp, int64_t r0, int64_t r1, int64_t w, bool causal, float* lse,
                         float* inv) {
  for (int64_t r = r0; r < r1; ++r) {
    float* row = P + (r - r0) * ldp;
    const int64_t n = causal ? r + 1 : w;
    float mx = row[0], raw = 0.f;
    for (int64_t c = 0; c < n; ++c) {
      mx = std::fmax(mx, row[c]);  // fmax: a select, so the loop vectorizes (std::max is a branch here)
      raw += row[c];
    }
    if (poisoned(raw)) {
      std::fill(row, row + w, kNaN);
      lse[r] = inv[r - r0] = kNaN;
      continue;
    }
    float s = 0.f;
    for (int64_t c = 0; c < n; ++c) {  // exp(-80) = 2e-35: inputs clamped there stay off exp's slow path
      row[c] = std::exp(std::max(row[c] - mx, -80.f));
      s += row[c];
    }
    for (int64_t c = n; c < w; ++c) row[c] = 0.f;
    inv[r - r0] = 1.f / s;
    lse[r] = mx + std::log(s);
  }
}

// P rows [r0, r1) of width w from scores and the forward's log-sum-exp: the same probabilities again
inline void probs_again(float* P, int64_t ldp, int64_t r0, int64_t r1, int64_t w, bool causal, const float* lse) {
  for (int64_t r = r0; r < r1; ++r) {
    float* row = P + (r - r0) * ldp;
    const int64_t n = causal ? r + 1 : w;
    if (poisoned(lse[r])) {
      std::fill(row, row + w, kNaN);
      continue;
    }
    const float l = lse[r];  // a local: a store to row could alias lse[r], which would keep the loop scalar
    for (int64_t c = 0; c < n; ++c) row[c] = std::exp(std::max(row[c] - l, -80.f));
    for (int64_t c = n; c < w; ++c) row[c] = 0.f;
  }
}


// the (B, T, 3, H, D) projection's q or k (which = 0, 1) of pair (b, h), turned by table (T, 2, D/2, 2) when
// given -- pairs (x_2i, x_2i+1) times (cos, sin) as complex numbers (RoFormer eq. 34) -- into dst (T, D)
void load_turned(const at::Tensor& qkv, const at::Tensor* table, int64_t which, int64_t b, int64_t h, float* dst) {
  const int64_t T = qkv.size(1), D = qkv.size(4), st = qkv.stride(1);
  const float* src = qkv.data_ptr<float>() + b * qkv.stride(0) + which * qkv.stride(2) + h * qkv.stride(3);
  for (int64_t t = 0; t < T; ++t) {
    const float* x = src + t * st;
    float* y = dst + t * D;
    if (table == nullptr) {
      std::copy(x, x + D, y);
      continue;
    }
    const float* z = table->data_ptr<float>() + (t * 2 + which) * D;  // D/2 (cos, sin) pairs
    for (int64_t i = 0; i < D; i += 2) {
      y[i] = x[i] * z[i] - x[i + 1] * z[i + 1];
      y[i + 1] = x[i] * z[i + 1] + x[i + 1] * z[i];
    }
  }
}

// dst (T rows of stride ld) = src (T, D) turned back (times conj(z)): the adjoint of load_turned
void store_turned_back(const float* src, const at::Tensor* table, int64_t which, int64_t T, int64_t D,
                       float* dst, int64_t ld) {
  for (int64_t t = 0; t < T; ++t) {
    const float* x = src + t * D;
    float* y = dst + t * ld;
    if (table == nullptr) {
      std::copy(x, x + D, y);
      continue;
    }
    const float* z = table->data_ptr<float>() + (t * 2 + which) * D;
    for (int64_t i = 0; i < D; i += 2) {
      y[i] = x[i] * z[i] + x[i + 1] * z[i + 1];
      y[i + 1] = x[i + 1] * z[i] - x[i] * z[i + 1];
    }
  }
}

void check_inputs(const at::Tensor& qkv, const std::optional<at::Tensor>& table,
                  const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(qkv.device().is_cpu() && qkv.scalar_type() == at::kFloat, "qkv: a float32 CPU tensor");
  TORCH_CHECK(qkv.dim() == 5 && qkv.size(2) == 3 && qkv.stride(4) == 1 && qkv.size(4) % 2 == 0,
              "qkv: (B, T, 3, H, D) with an even D and unit stride along D");
  if (table) {
    TORCH_CHECK(table->scalar_type() == at::kFloat && table->is_contiguous(), "table: contiguous float32");
    TORCH_CHECK(table->dim() == 4 && table->size(0) == qkv.size(1) && table->size(1) == 2 &&
                table->size(2) * 2 == qkv.size(4) && table->size(3) == 2, "table: (T, 2, D/2, 2)");
  }
  if (bias) {
    TORCH_CHECK(bias->scalar_type() == at::kFloat && bias->is_contiguous(), "bias: contiguous float32");
    TORCH_CHECK(bias->dim() == 3 && bias->size(0) == qkv.size(3) && bias->size(1) == qkv.size(1) &&
                bias->size(2) == qkv.size(1), "bias: (H, T, T)");
  }
}

}  // namespace

// qkv (B, T, 3, H, D), q and k turned by table (T, 2, D/2, 2) and scores plus bias (H, T, T) when given ->
// out (B, H, T, D) (memory (B, T, H, D)), the rows' log-sum-exp (B, H, T)
std::vector<at::Tensor> small_attention_forward(const at::Tensor& qkv, const std::optional<at::Tensor>& table,
                                                const std::optional<at::Tensor>& bias, double scale, bool causal) {
  check_inputs(qkv, table, bias);
  const int64_t B = qkv.size(0), T = qkv.size(1), H = qkv.size(3), D = qkv.size(4), lv = qkv.stride(1);
  auto out = at::empty({B, T, H, D}, qkv.options());
  auto lse = at::empty({B, H, T}, qkv.options());
  const at::Tensor* tab = table ? &*table : nullptr;
  const float sc = (float)scale;
  at::parallel_for(0, B * H, 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> qk(2 * T * D), scratch(BQ * T);
    float *Q = qk.data(), *K = qk.data() + T * D, inv[BQ];
    for (int64_t i = lo; i < hi; ++i) {
      const int64_t b = i / H, h = i % H;
      load_turned(qkv, tab, 0, b, h, Q);
      load_turned(qkv, tab, 1, b, h, K);
      const float* V = qkv.data_ptr<float>() + b * qkv.stride(0) + 2 * qkv.stride(2) + h * qkv.stride(3);
      float* O = out.data_ptr<float>() + (b * T * H + h) * D;  // rows of stride H * D
      for (int64_t r0 = 0; r0 < T; r0 += BQ) {
        const int64_t r1 = std::min(T, r0 + BQ), w = causal ? r1 : T;
        float* P = scratch.data();
        gemm(false, true, r1 - r0, w, D, sc, Q + r0 * D, D, K, D, 0.f, P, T);        // S = scale Q K^T
        if (bias) add_bias(P, T, bias->data_ptr<float>() + h * T * T, T, r0, r1, w);  // + bias
        softmax_rows(P, T, r0, r1, w, causal, lse.data_ptr<float>() + i * T, inv);  // E = exp(S - max)
        gemm(false, false, r1 - r0, D, w, 1.f, P, T, V, lv, 0.f, O + r0 * H * D, H * D);  // O = E V
        for (int64_t r = r0; r < r1; ++r)                                          // O /= row sums of E
          for (int64_t j = 0; j < D; ++j) O[r * H * D + j] *= inv[r - r0];
      }
    }
  });
  return {out.transpose(1, 2), lse};
}

// the gradients of qkv (B, T, 3, H, D) and, when bias_grad, of the bias (H, T, T) (else an empty tensor),
// from that of out (B, H, T, D) and the forward's log-sum-exp
std::vector<at::Tensor> small_attention_backward(const at::Tensor& grad_out, const at::Tensor& qkv,
                                                 const std::optional<at::Tensor>& table,
                                                 const std::optional<at::Tensor>& bias, const at::Tensor& out,
                                                 const at::Tensor& lse, double scale, bool causal, bool bias_grad) {
  check_inputs(qkv, table, bias);
  TORCH_CHECK(!bias_grad || bias, "bias_grad: needs a bias");
  const int64_t B = qkv.size(0), T = qkv.size(1), H = qkv.size(3), D = qkv.size(4), lv = qkv.stride(1);
  TORCH_CHECK(lse.is_contiguous() && lse.numel() == B * H * T, "lse: (B, H, T) of the forward");
  for (auto* x : {&grad_out, &out}) {
    TORCH_CHECK(x->scalar_type() == at::kFloat && x->dim() == 4 && x->size(0) == B && x->size(1) == H &&
                x->size(2) == T && x->size(3) == D && x->stride(3) == 1, "grad_out, out: (B, H, T, D) float32");
  }
  auto grad = at::empty({B, T, 3, H, D}, qkv.options());
  const at::Tensor* tab = table ? &*table : nullptr;
  const float sc = (float)scale;
  const int64_t lg = grad_out.stride(2), lo_ = out.stride(2), ld = grad.stride(1);
  const int64_t nthreads = at::get_num_threads();
  auto partial = bias_grad ? at::zeros({nthreads, H, T, T}, qkv.options()) : at::empty({0}, qkv.options());
  at::parallel_for(0, B * H, 1, [&](int64_t lo, int64_t hi) {
    float* dbias = bias_grad ? partial.data_ptr<float>() + at::get_thread_num() * H * T * T : nullptr;
    std::vector<float> qk(2 * T * D), dqk(2 * T * D), ps(BQ * T), ds(BQ * T);
    float *Q = qk.data(), *K = qk.data() + T * D, *DQ = dqk.data(), *DK = dqk.data() + T * D;
    for (int64_t i = lo; i < hi; ++i) {
      const int64_t b = i / H, h = i % H;
      load_turned(qkv, tab, 0, b, h, Q);
      load_turned(qkv, tab, 1, b, h, K);
      const float* V = qkv.data_ptr<float>() + b * qkv.stride(0) + 2 * qkv.stride(2) + h * qkv.stride(3);
      const float* G = grad_out.data_ptr<float>() + b * grad_out.stride(0) + h * grad_out.stride(1);
      const float* O = out.data_ptr<float>() + b * out.stride(0) + h * out.stride(1);
      float* g0 = grad.data_ptr<float>() + b * grad.stride(0) + h * grad.stride(3);  // + which * stride(2)
      float* DV = g0 + 2 * grad.stride(2);
      // row blocks from the last (the widest when causal), so dK and dV are first written over all their rows
      for (int64_t r0 = ((T - 1) / BQ) * BQ; r0 >= 0; r0 -= BQ) {
        const int64_t r1 = std::min(T, r0 + BQ), w = causal ? r1 : T, m = r1 - r0;
        const float beta = r1 == T ? 0.f : 1.f;
        float* P = ps.data();
        gemm(false, true, m, w, D, sc, Q + r0 * D, D, K, D, 0.f, P, T);                 // S = scale Q K^T
        if (bias) add_bias(P, T, bias->data_ptr<float>() + h * T * T, T, r0, r1, w);    // + bias
        probs_again(P, T, r0, r1, w, causal, lse.data_ptr<float>() + i * T);            // P
        gemm(true, false, w, D, m, 1.f, P, T, G + r0 * lg, lg, beta, DV, ld);           // dV += P^T dO
        gemm(false, true, m, w, D, 1.f, G + r0 * lg, lg, V, lv, 0.f, ds.data(), T);     // dP = dO V^T
        for (int64_t r = r0; r < r1; ++r) {                                             // dS = P (dP - delta)
          const float *g = G + r * lg, *o = O + r * lo_, *p = P + (r - r0) * T;
          float delta = 0.f;
          for (int64_t d = 0; d < D; ++d) delta += g[d] * o[d];
          float* s = ds.data() + (r - r0) * T;
          for (int64_t c = 0; c < w; ++c) s[c] = p[c] * (s[c] - delta);
          if (dbias) {                                                                  // dbias[h] += dS
            float* db = dbias + (h * T + r) * T;
            for (int64_t c = 0; c < w; ++c) db[c] += s[c];
          }
        }
        gemm(false, false, m, D, w, sc, ds.data(), T, K, D, 0.f, DQ + r0 * D, D);       // dQ = scale dS K
        gemm(true, false, w, D, m, sc, ds.data(), T, Q + r0 * D, D, beta, DK, D);       // dK += scale dS^T Q
      }
      store_turned_back(DQ, tab, 0, T, D, g0, ld);
      store_turned_back(DK, tab, 1, T, D, g0 + grad.stride(2), ld);
    }
  });
  return {grad, bias_grad ? partial.sum(0) : partial};  // threads summed in order
}

TORCH_LIBRARY(attnlab, m) {
  m.def("small_attention_forward(Tensor qkv, Tensor? table, Tensor? bias, float scale, bool causal)"
        " -> Tensor[]", small_attention_forward);
  m.def("small_attention_backward(Tensor grad_out, Tensor qkv, Tensor? table, Tensor? bias, Tensor out,"
        " Tensor lse, float scale, bool causal, bool bias_grad) -> Tensor[]", small_attention_backward);
}
