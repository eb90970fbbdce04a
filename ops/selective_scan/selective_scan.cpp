// ops/selective_scan.cpp — the public op: checks -> allocate -> dispatch -> kernel -> record.
// The math is in ops/selective_scan.h; the kernels in selective_scan_fast.cpp and
// selective_scan_sequential.cpp; the composed reference in selective_scan_reference.cpp.
#include "ops/selective_scan/selective_scan.h"

#include "autograd/tape.h"
#include "core/dispatch.h"
#include "ops/selective_scan/kernels.h"
#ifdef MG_WITH_CUDA
#include "cuda/selective_scan.h"
#endif

namespace mg {

namespace {

ScanOptions g_scan_options;
constexpr const char* kOp = "selective_scan";

template <typename T> const T* ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}
template <typename T> T* mut_ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

// The shapes every input must have, named in errors: (B, L, ED, N) from u and A.
struct Dims {
  int64_t B, L, ED, N;
};

Dims check_inputs(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& Bm,
                  const Tensor& C, const Tensor& D, const Tensor& z, const Tensor& delta_bias,
                  const Tensor& h0) {
  check_defined(kOp, u, "u");
  check_defined(kOp, delta, "delta");
  check_defined(kOp, A, "A");
  check_defined(kOp, Bm, "B");
  check_defined(kOp, C, "C");
  check_float(kOp, u, "u");
  check_dim(kOp, u, 3, "u (B, L, ED)");
  check_dim(kOp, A, 2, "A (ED, N)");
  const Dims s{u.size(0), u.size(1), u.size(2), A.size(1)};
  MG_CHECK(s.L >= 1 && s.ED >= 1 && s.N >= 1, kOp, ": needs L, ED, N >= 1, got u ",
           shape_str(u.shape()), " and A ", shape_str(A.shape()));
  check_shape(kOp, delta, {s.B, s.L, s.ED}, "delta");
  check_shape(kOp, A, {s.ED, s.N}, "A");
  check_shape(kOp, Bm, {s.B, s.L, s.N}, "B");
  check_shape(kOp, C, {s.B, s.L, s.N}, "C");
  if (D.defined()) check_shape(kOp, D, {s.ED}, "D");
  if (z.defined()) check_shape(kOp, z, {s.B, s.L, s.ED}, "z");
  if (delta_bias.defined()) check_shape(kOp, delta_bias, {s.ED}, "delta_bias");
  if (h0.defined()) check_shape(kOp, h0, {s.B, s.ED, s.N}, "h0");
  for (const Tensor* t : {&u, &delta, &A, &Bm, &C, &D, &z, &delta_bias, &h0}) {
    if (!t->defined()) continue;
    check_same_dtype(kOp, u, *t);
    check_same_device(kOp, u, *t);
  }
  if (u.device().is_cuda()) check_dtype(kOp, u, DType::f32, "u (CUDA kernels are f32 only)");
  return s;
}

}  // namespace

const ScanOptions& scan_options() { return g_scan_options; }
void set_scan_options(const ScanOptions& opts) {
  MG_CHECK(opts.chunk >= 1, "set_scan_options: chunk T must be >= 1, got ", opts.chunk);
  g_scan_options = opts;
}

ScanResult selective_scan(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B,
                          const Tensor& C, const Tensor& D, const Tensor& z,
                          const Tensor& delta_bias, bool delta_softplus, const Tensor& h0) {
  return selective_scan(scan_options(), u, delta, A, B, C, D, z, delta_bias, delta_softplus, h0);
}

ScanResult selective_scan(const ScanOptions& opts, const Tensor& u, const Tensor& delta,
                          const Tensor& A, const Tensor& Bm, const Tensor& C, const Tensor& D,
                          const Tensor& z, const Tensor& delta_bias, bool delta_softplus,
                          const Tensor& h0) {
  MG_CHECK(opts.chunk >= 1, kOp, ": chunk T must be >= 1, got ", opts.chunk);
  const Dims s = check_inputs(u, delta, A, Bm, C, D, z, delta_bias, h0);
  const std::vector<Tensor> inputs{u, delta, A, Bm, C, D, z, delta_bias, h0};
  const bool on_cuda = u.device().is_cuda();
  const bool fast = opts.impl == ScanImpl::fast;
  const bool save_states = (fast || on_cuda) && needs_grad(inputs);  // CUDA has no sequential form
  const int64_t T_chunk = opts.chunk, num_chunks = cpu::scan_num_chunks(s.L, T_chunk);

  const Device dev = u.device();
  Tensor y = Tensor::empty({s.B, s.L, s.ED}, u.dtype(), dev);
  Tensor h_last = Tensor::empty({s.B, s.ED, s.N}, u.dtype(), dev);
  // The only thing saved besides the inputs: the state entering each chunk of T steps.
  Tensor chunk_states =
      save_states ? Tensor::empty({s.B, num_chunks, s.ED, s.N}, u.dtype(), dev) : Tensor();
  if (on_cuda) {
#ifdef MG_WITH_CUDA
    cuda::selective_scan_fwd(u.data<float>(), delta.data<float>(), A.data<float>(),
                             Bm.data<float>(), C.data<float>(), ptr_or_null<float>(D),
                             ptr_or_null<float>(z), ptr_or_null<float>(delta_bias), delta_softplus,
                             ptr_or_null<float>(h0), y.data<float>(), h_last.data<float>(),
                             mut_ptr_or_null<float>(chunk_states), s.B, s.L, s.ED, s.N, T_chunk);
#endif
  } else dispatch_float(u.dtype(), kOp, [&]<typename T>() {
    if (fast)
      cpu::selective_scan_fwd<T>(u.data<T>(), delta.data<T>(), A.data<T>(), Bm.data<T>(),
                                 C.data<T>(), ptr_or_null<T>(D), ptr_or_null<T>(z),
                                 ptr_or_null<T>(delta_bias), delta_softplus, ptr_or_null<T>(h0),
                                 y.data<T>(), h_last.data<T>(), mut_ptr_or_null<T>(chunk_states),
                                 s.B, s.L, s.ED, s.N, T_chunk);
    else
      cpu::selective_scan_sequential_fwd<T>(
          u.data<T>(), delta.data<T>(), A.data<T>(), Bm.data<T>(), C.data<T>(),
          ptr_or_null<T>(D), ptr_or_null<T>(z), ptr_or_null<T>(delta_bias), delta_softplus,
          ptr_or_null<T>(h0), y.data<T>(), h_last.data<T>(), s.B, s.L, s.ED, s.N);
  });

  record(kOp, inputs, {y, h_last},
         [inputs, chunk_states, s, fast, on_cuda, T_chunk, delta_softplus](const std::vector<Tensor>& d) {
           const Tensor &u = inputs[0], &delta = inputs[1], &A = inputs[2], &Bm = inputs[3],
                        &C = inputs[4], &D = inputs[5], &z = inputs[6], &bias = inputs[7],
                        &h0 = inputs[8];
           const Tensor &dy = d[0], &dh_last = d[1];
           const DType dt = u.dtype();
           const Device dev = u.device();
           auto make = [&](const Shape& shape) { return Tensor::empty(shape, dt, dev); };
           Tensor du = make(u.shape()), ddelta = make(u.shape()), dA = make(A.shape());
           Tensor dB = make(Bm.shape()), dC = make(C.shape());
           Tensor dD = D.defined() ? make(D.shape()) : Tensor();
           Tensor dz = z.defined() ? make(z.shape()) : Tensor();
           Tensor dbias = bias.defined() ? make(bias.shape()) : Tensor();
           Tensor dh0 = h0.defined() ? make(h0.shape()) : Tensor();
           if (on_cuda) {
#ifdef MG_WITH_CUDA
             cuda::selective_scan_bwd(
                 u.data<float>(), delta.data<float>(), A.data<float>(), Bm.data<float>(),
                 C.data<float>(), ptr_or_null<float>(D), ptr_or_null<float>(z),
                 ptr_or_null<float>(bias), delta_softplus, chunk_states.data<float>(),
                 dy.data<float>(), dh_last.data<float>(), du.data<float>(), ddelta.data<float>(),
                 dA.data<float>(), dB.data<float>(), dC.data<float>(), mut_ptr_or_null<float>(dD),
                 mut_ptr_or_null<float>(dz), mut_ptr_or_null<float>(dbias),
                 mut_ptr_or_null<float>(dh0), s.B, s.L, s.ED, s.N, T_chunk);
#endif
           } else dispatch_float(dt, kOp, [&]<typename T>() {
             if (fast)
               cpu::selective_scan_bwd<T>(
                   u.data<T>(), delta.data<T>(), A.data<T>(), Bm.data<T>(), C.data<T>(),
                   ptr_or_null<T>(D), ptr_or_null<T>(z), ptr_or_null<T>(bias), delta_softplus,
                   chunk_states.data<T>(), dy.data<T>(), dh_last.data<T>(), du.data<T>(),
                   ddelta.data<T>(), dA.data<T>(), dB.data<T>(), dC.data<T>(),
                   mut_ptr_or_null<T>(dD), mut_ptr_or_null<T>(dz), mut_ptr_or_null<T>(dbias),
                   mut_ptr_or_null<T>(dh0), s.B, s.L, s.ED, s.N, T_chunk);
             else
               cpu::selective_scan_sequential_bwd<T>(
                   u.data<T>(), delta.data<T>(), A.data<T>(), Bm.data<T>(), C.data<T>(),
                   ptr_or_null<T>(D), ptr_or_null<T>(z), ptr_or_null<T>(bias), delta_softplus,
                   ptr_or_null<T>(h0), dy.data<T>(), dh_last.data<T>(), du.data<T>(),
                   ddelta.data<T>(), dA.data<T>(), dB.data<T>(), dC.data<T>(),
                   mut_ptr_or_null<T>(dD), mut_ptr_or_null<T>(dz), mut_ptr_or_null<T>(dbias),
                   mut_ptr_or_null<T>(dh0), s.B, s.L, s.ED, s.N);
           });
           return std::vector<Tensor>{du, ddelta, dA, dB, dC, dD, dz, dbias, dh0};
         });
  return {y, h_last};
}

}  // namespace mg
