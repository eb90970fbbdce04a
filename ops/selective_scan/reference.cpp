// ops/selective_scan/reference.cpp — the selective scan composed from primitive ops.
//
// Everything of size (B, L, ED, N) is materialised, as a naive framework implementation would
// (the paper's "standard implementation"); gradients come from the primitive ops' backward
// functions through the tape. Our broadcasting only matches trailing suffixes, so the outer
// products over (ED, N) are batched matmuls with an inner dimension of 1:
//
//   delta_t       = softplus(delta_raw + delta_bias)                      (B, L, ED)
//   deltaA        = (delta (B,L,ED,1) @ ones (1,N)) * A                   (B, L, ED, N)
//   A_bar         = exp(deltaA)
//   deltaBu       = (delta u) (B,L,ED,1) @ B (B,L,1,N)                    (B, L, ED, N)
//   h_t           = A_bar[:, t] * h_{t-1} + deltaBu[:, t]      (split into L steps, one loop)
//   y             = (cat_t h_t) (B,L,ED,N) @ C (B,L,N,1) + D u,  then * silu(z)
//
// For tests and benchmarks only.
#include "ops/arith.h"
#include "ops/matmul.h"
#include "ops/selective_scan/selective_scan.h"
#include "ops/shape.h"
#include "ops/unary.h"

namespace mg {

ScanResult selective_scan_reference(const Tensor& u, const Tensor& delta, const Tensor& A,
                                    const Tensor& Bm, const Tensor& C, const Tensor& D,
                                    const Tensor& z, const Tensor& delta_bias,
                                    bool delta_softplus, const Tensor& h0) {
  const char* op = "selective_scan_reference";
  check_dim(op, u, 3, "u (B, L, ED)");
  check_dim(op, A, 2, "A (ED, N)");
  const int64_t B = u.size(0), L = u.size(1), ED = u.size(2), N = A.size(1);
  check_shape(op, delta, {B, L, ED}, "delta");
  check_shape(op, Bm, {B, L, N}, "B");
  check_shape(op, C, {B, L, N}, "C");
  if (h0.defined()) check_shape(op, h0, {B, ED, N}, "h0");

  Tensor r = delta_bias.defined() ? delta + delta_bias : delta;
  Tensor dt = delta_softplus ? softplus(r) : r;
  Tensor ones_N = Tensor::ones({1, N}, u.dtype());
  Tensor A_bar = exp(matmul(reshape(dt, {B, L, ED, 1}), ones_N) * A);
  Tensor deltaBu = matmul(reshape(dt * u, {B, L, ED, 1}), reshape(Bm, {B, L, 1, N}));

  const std::vector<int64_t> steps(L, 1);
  std::vector<Tensor> A_bar_t = split(A_bar, steps, 1);  // L tensors (B, 1, ED, N)
  std::vector<Tensor> deltaBu_t = split(deltaBu, steps, 1);
  Tensor h = h0.defined() ? reshape(h0, {B, 1, ED, N}) : Tensor::zeros({B, 1, ED, N}, u.dtype());
  std::vector<Tensor> hs;
  hs.reserve(L);
  for (int64_t t = 0; t < L; ++t) {
    h = A_bar_t[t] * h + deltaBu_t[t];
    hs.push_back(h);
  }
  Tensor y = reshape(matmul(cat(hs, 1), reshape(C, {B, L, N, 1})), {B, L, ED});
  if (D.defined()) y = y + u * D;
  if (z.defined()) y = y * silu(z);
  return {y, reshape(h, {B, ED, N})};
}

}  // namespace mg
