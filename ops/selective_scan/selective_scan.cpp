// ops/selective_scan/selective_scan.cpp — the public op: checks -> choose the kernel ->
// allocate -> run it -> record the backward. The math is in selective_scan.h, the kernels'
// arguments in scan_args.h, the kernels in kernels.h.
#include "ops/selective_scan/selective_scan.h"

#include <type_traits>

#include "autograd/tape.h"
#include "core/dispatch.h"
#include "core/settings.h"
#include "ops/convert.h"
#include "ops/selective_scan/kernels.h"

namespace mg {

// ---- the one place that decides which kernel runs ----------------------------------------------
// CPU tensors: settings().scan_kernel (fast or sequential); "fast" is the N-specialised f32
// kernel when N allows it, else the generic one. CUDA tensors: settings().cuda_scan. A new
// kernel is one more line here (and its declaration in kernels.h).
template <typename T>
ScanKernelPair<T> choose_scan_kernel(Device device, int64_t N) {
  const Settings& s = settings();
  if (device.is_cuda()) {
    if constexpr (std::is_same_v<T, float> && kHaveCudaScan) {
      switch (s.cuda_scan) {
        case CudaScanVersion::v1:
          return {"cuda v1", cuda::selective_scan_forward_v1, cuda::selective_scan_backward_v1};
        case CudaScanVersion::v2:
          return {"cuda v2", cuda::selective_scan_forward_v2, cuda::selective_scan_backward_v2};
        case CudaScanVersion::v3:
          return {"cuda v3", cuda::selective_scan_forward_v3, cuda::selective_scan_backward_v3};
      }
    }
    throw Error(detail::cat("selective_scan: no CUDA kernel for ", device.str(), " tensors of ",
                            sizeof(T) * 8, "-bit floats (CUDA kernels are f32, in a CUDA build)"));
  }
  if (s.scan_kernel == ScanKernel::sequential)
    return {"sequential", cpu::selective_scan_sequential_forward<T, T>,
            cpu::selective_scan_sequential_backward<T, T>, false};
  if constexpr (std::is_same_v<T, float>)
    if (cpu::fixed_kernel_supports(N))
      return {"fixed", cpu::selective_scan_fixed_forward, cpu::selective_scan_fixed_backward};
  return {"fast", cpu::selective_scan_forward<T>, cpu::selective_scan_backward<T>};
}
template ScanKernelPair<float> choose_scan_kernel<float>(Device, int64_t);
template ScanKernelPair<double> choose_scan_kernel<double>(Device, int64_t);

// Mixed precision (u, delta, B, C and z all bf16): a native bf16 kernel when there is one —
// CUDA v2 (the default CUDA scan and the training step's) and v3 (compiled, not yet run on a
// GPU), which read and write the bf16 activations themselves (half their bytes;
// docs/cuda_scan.md); and on the CPU the sequential spec (settings().scan_kernel ==
// sequential), the bf16 kernels' reference, so the op's native path (its tape, dtypes and bf16
// gradients) runs in the CPU tests too. Everything else widens the bf16 activations into f32
// temporaries for choose_scan_kernel<float>'s kernel (run_scan_bf16): CUDA v1 (the teaching
// port) has f32 kernels only, and the CPU's fast kernels are f32/f64 (the CPU's bf16 is
// storage). Same numbers
// either way up to f32 summation order: every kernel reads bf16 widened exactly, keeps the
// state and sums in f32 and rounds each output once.
std::optional<ScanKernelPair<bf16, float>> choose_scan_kernel_bf16(Device device, int64_t N) {
  (void)N;  // v2 and v3 take any N up to their limits (they check)
  if (device.is_cpu()) {
    if (settings().scan_kernel == ScanKernel::sequential)
      return ScanKernelPair<bf16, float>{"sequential bf16",
                                         cpu::selective_scan_sequential_forward<bf16, float>,
                                         cpu::selective_scan_sequential_backward<bf16, float>,
                                         false};
    return std::nullopt;
  }
#ifdef MG_WITH_CUDA
  if (settings().cuda_scan == CudaScanVersion::v2)
    return ScanKernelPair<bf16, float>{"cuda v2 bf16", cuda::selective_scan_forward_v2,
                                       cuda::selective_scan_backward_v2};
  if (settings().cuda_scan == CudaScanVersion::v3)
    return ScanKernelPair<bf16, float>{"cuda v3 bf16", cuda::selective_scan_forward_v3,
                                       cuda::selective_scan_backward_v3};
#endif
  return std::nullopt;
}

namespace {

constexpr const char* kOp = "selective_scan";

// The op's inputs in argument order, as recorded on the tape; optional ones may be undefined.
enum Input { kU, kDelta, kA, kB, kC, kD, kZ, kDeltaBias, kH0, kNumInputs };

// Mixed precision: the activations (u, delta, B, C, z) may be bf16 while A, D, delta_bias, h0
// and the state stay f32 (ScanArgs<bf16, float>'s contract).
bool is_activation(int k) { return k == kU || k == kDelta || k == kB || k == kC || k == kZ; }
bool is_mixed(const std::vector<Tensor>& in) {
  for (int k = 0; k < kNumInputs; ++k)
    if (is_activation(k) && is_bf16(in[k])) return true;
  return false;
}
// Every activation given is bf16 (what a native ScanArgs<bf16, float> kernel takes).
bool all_activations_bf16(const std::vector<Tensor>& in) {
  for (int k = 0; k < kNumInputs; ++k)
    if (is_activation(k) && in[k].defined() && !is_bf16(in[k])) return false;
  return true;
}
// The inputs with the bf16 activations widened to f32: temporaries, not recorded.
std::vector<Tensor> widened(const std::vector<Tensor>& in) {
  std::vector<Tensor> w = in;
  for (int k = 0; k < kNumInputs; ++k)
    if (is_activation(k) && is_bf16(w[k])) w[k] = w[k].cast(DType::f32);
  return w;
}

// The shapes every input must have, named in errors: (B, L, ED, N) from u and A.
struct Dims {
  int64_t B, L, ED, N;
};

Dims check_inputs(const std::vector<Tensor>& in) {
  const Tensor &u = in[kU], &A = in[kA];
  check_defined(kOp, u, "u");
  check_defined(kOp, in[kDelta], "delta");
  check_defined(kOp, A, "A");
  check_defined(kOp, in[kB], "B");
  check_defined(kOp, in[kC], "C");
  check_float(kOp, u, "u");
  check_dim(kOp, u, 3, "u (B, L, ED)");
  check_dim(kOp, A, 2, "A (ED, N)");
  const Dims s{u.size(0), u.size(1), u.size(2), A.size(1)};
  MG_CHECK(s.L >= 1 && s.ED >= 1 && s.N >= 1, kOp, ": needs L, ED, N >= 1, got u ",
           shape_str(u.shape()), " and A ", shape_str(A.shape()));
  check_shape(kOp, in[kDelta], {s.B, s.L, s.ED}, "delta");
  check_shape(kOp, A, {s.ED, s.N}, "A");
  check_shape(kOp, in[kB], {s.B, s.L, s.N}, "B");
  check_shape(kOp, in[kC], {s.B, s.L, s.N}, "C");
  if (in[kD].defined()) check_shape(kOp, in[kD], {s.ED}, "D");
  if (in[kZ].defined()) check_shape(kOp, in[kZ], {s.B, s.L, s.ED}, "z");
  if (in[kDeltaBias].defined()) check_shape(kOp, in[kDeltaBias], {s.ED}, "delta_bias");
  if (in[kH0].defined()) check_shape(kOp, in[kH0], {s.B, s.ED, s.N}, "h0");
  const bool mixed = is_mixed(in);
  for (int k = 0; k < kNumInputs; ++k) {
    const Tensor& t = in[k];
    if (!t.defined()) continue;
    check_same_device(kOp, u, t);
    if (!mixed) check_same_dtype(kOp, u, t);
    else if (!is_activation(k) || !is_bf16(t))  // mixed precision: the rest is f32
      check_dtype(kOp, t, DType::f32, "(with bf16 activations, every other input is f32)");
  }
  if (u.device().is_cuda() && !mixed)
    check_dtype(kOp, u, DType::f32, "u (CUDA kernels are f32 only)");
  return s;
}

// The kernels' inputs from the op's tensors (undefined -> null); outputs are set by the caller.
// T: the activations' element type, S: the parameters' and state's (S = T but for bf16).
template <typename T, typename S = T>
ScanArgs<T, S> scan_args(const std::vector<Tensor>& in, const Dims& s, bool delta_softplus,
                         int64_t T_chunk) {
  return {.B = s.B, .L = s.L, .ED = s.ED, .N = s.N, .T = T_chunk,
          .u = in[kU].data<T>(), .delta = in[kDelta].data<T>(), .A = in[kA].data<S>(),
          .Bm = in[kB].data<T>(), .C = in[kC].data<T>(), .D = in[kD].data_or_null<S>(),
          .z = in[kZ].data_or_null<T>(), .delta_bias = in[kDeltaBias].data_or_null<S>(),
          .delta_softplus = delta_softplus, .h0 = in[kH0].data_or_null<S>()};
}

// Runs `kernel` on the inputs as given: f32 or f64 throughout (S = T), or bf16 activations with
// f32 parameters and state (T = bf16, S = float: y and the activations' gradients bf16, h_last,
// the chunk states and the parameters' gradients f32).
template <typename T, typename S = T>
ScanResult run_scan(const std::vector<Tensor>& in, const Dims& s, bool delta_softplus,
                    const ScanKernelPair<T, S>& kernel) {
  const Device dev = in[kU].device();
  const DType dt = dtype_of<T>(), ds = dtype_of<S>();
  const int64_t T_chunk = settings().scan_chunk;
  Tensor y = Tensor::empty({s.B, s.L, s.ED}, dt, dev);
  Tensor h_last = Tensor::empty({s.B, s.ED, s.N}, ds, dev);
  // The only thing saved besides the inputs: the state entering each chunk of T steps.
  const bool save = kernel.saves_chunk_states && needs_grad(in);
  Tensor chunk_states =
      save ? Tensor::empty({s.B, scan_num_chunks(s.L, T_chunk), s.ED, s.N}, ds, dev) : Tensor();
  ScanArgs<T, S> a = scan_args<T, S>(in, s, delta_softplus, T_chunk);
  a.y = y.data<T>();
  a.h_last = h_last.data<S>();
  a.chunk_states = chunk_states.data_or_null<S>();
  kernel.forward(a);

  // The backward runs the forward's family (it reads what that forward saved).
  record(kOp, in, {y, h_last}, [in, s, delta_softplus, T_chunk, kernel, chunk_states](
                                   const std::vector<Tensor>& d) {
    std::vector<Tensor> grads(kNumInputs);  // one per defined input, in argument order
    for (int k = 0; k < kNumInputs; ++k)
      if (in[k].defined()) grads[k] = Tensor::empty(in[k].shape(), in[k].dtype(), in[k].device());
    ScanArgs<T, S> a = scan_args<T, S>(in, s, delta_softplus, T_chunk);
    a.chunk_states = chunk_states.data_or_null<S>();
    // (Autograd hands y's gradient in y's dtype; cast only if a caller seeded another.)
    const Tensor dy = d[0].dtype() == dtype_of<T>() ? d[0] : d[0].cast(dtype_of<T>());
    const ScanGrads<T, S> g{.dy = dy.data<T>(), .dh_last = d[1].data<S>(),
                            .du = grads[kU].data<T>(), .ddelta = grads[kDelta].data<T>(),
                            .dA = grads[kA].data<S>(), .dB = grads[kB].data<T>(),
                            .dC = grads[kC].data<T>(), .dD = grads[kD].data_or_null<S>(),
                            .dz = grads[kZ].data_or_null<T>(),
                            .ddelta_bias = grads[kDeltaBias].data_or_null<S>(),
                            .dh0 = grads[kH0].data_or_null<S>()};
    kernel.backward(a, g);
    return grads;
  });
  return {y, h_last};
}

// bf16 activations, f32 parameters and state, on the f32 kernels (where no native bf16 kernel
// runs: the CPU, CUDA v1, activations mixing bf16 and f32): the activations are widened
// into temporaries for the forward kernel and again in the backward, so the tape keeps the
// bf16 tensors and the f32 chunk states only (what a ScanArgs<bf16, float> kernel keeps); y
// and the activations' gradients are rounded to bf16 once. The results are exactly those of
// a bf16 kernel with f32 state and sums (the widening is exact).
ScanResult run_scan_bf16(const std::vector<Tensor>& in, const Dims& s, bool delta_softplus) {
  const Device dev = in[kU].device();
  const int64_t T_chunk = settings().scan_chunk;
  const ScanKernelPair<float> kernel = choose_scan_kernel<float>(dev, s.N);
  Tensor h_last = Tensor::empty({s.B, s.ED, s.N}, DType::f32, dev);
  const bool save = kernel.saves_chunk_states && needs_grad(in);
  Tensor chunk_states =
      save ? Tensor::empty({s.B, scan_num_chunks(s.L, T_chunk), s.ED, s.N}, DType::f32, dev)
           : Tensor();
  Tensor y;
  {
    const std::vector<Tensor> w = widened(in);
    Tensor y32 = Tensor::empty({s.B, s.L, s.ED}, DType::f32, dev);
    ScanArgs<float> a = scan_args<float>(w, s, delta_softplus, T_chunk);
    a.y = y32.data<float>();
    a.h_last = h_last.data<float>();
    a.chunk_states = chunk_states.data_or_null<float>();
    kernel.forward(a);
    y = is_bf16(in[kU]) ? y32.cast(DType::bf16) : y32;
  }
  record(kOp, in, {y, h_last}, [in, s, delta_softplus, T_chunk, kernel, chunk_states](
                                   const std::vector<Tensor>& d) {
    const std::vector<Tensor> w = widened(in);
    std::vector<Tensor> grads(kNumInputs);
    for (int k = 0; k < kNumInputs; ++k)
      if (w[k].defined()) grads[k] = Tensor::empty(w[k].shape(), DType::f32, w[k].device());
    ScanArgs<float> a = scan_args<float>(w, s, delta_softplus, T_chunk);
    a.chunk_states = chunk_states.data_or_null<float>();
    const Tensor dy = d[0].cast(DType::f32);
    const ScanGrads<float> g{.dy = dy.data<float>(), .dh_last = d[1].data<float>(),
                             .du = grads[kU].data<float>(), .ddelta = grads[kDelta].data<float>(),
                             .dA = grads[kA].data<float>(), .dB = grads[kB].data<float>(),
                             .dC = grads[kC].data<float>(), .dD = grads[kD].data_or_null<float>(),
                             .dz = grads[kZ].data_or_null<float>(),
                             .ddelta_bias = grads[kDeltaBias].data_or_null<float>(),
                             .dh0 = grads[kH0].data_or_null<float>()};
    kernel.backward(a, g);
    for (int k = 0; k < kNumInputs; ++k)
      if (is_activation(k) && is_bf16(in[k])) grads[k] = grads[k].cast(DType::bf16);
    return grads;
  });
  return {y, h_last};
}

}  // namespace

ScanResult selective_scan(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B,
                          const Tensor& C, const Tensor& D, const Tensor& z,
                          const Tensor& delta_bias, bool delta_softplus, const Tensor& h0) {
  const std::vector<Tensor> in{u, delta, A, B, C, D, z, delta_bias, h0};
  const Dims s = check_inputs(in);
  if (is_mixed(in)) {  // mixed precision: native bf16 kernel, or widened (choose_scan_kernel_bf16)
    if (all_activations_bf16(in))
      if (const auto native = choose_scan_kernel_bf16(u.device(), s.N))
        return run_scan<bf16, float>(in, s, delta_softplus, *native);
    return run_scan_bf16(in, s, delta_softplus);
  }
  ScanResult out;
  auto run = [&]<typename T>() {
    out = run_scan<T>(in, s, delta_softplus, choose_scan_kernel<T>(u.device(), s.N));
  };
  dispatch_device(u.device(), u.dtype(), kOp, run, run);
  return out;
}

// ---- one token ---------------------------------------------------------------------------------
Tensor selective_scan_step(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& Bm,
                           const Tensor& C, const Tensor& D, const Tensor& z,
                           const Tensor& delta_bias, bool delta_softplus, const Tensor& state) {
  const char* op = "selective_scan_step";
  check_float(op, u, "u");
  if (is_bf16(u) || is_bf16(delta) || is_bf16(Bm) || is_bf16(C) || is_bf16(z)) {
    // bf16 activations (mixed precision): widened; the state stays f32, y is rounded.
    auto wide = [](const Tensor& t) { return is_bf16(t) ? t.cast(DType::f32) : t; };
    Tensor y = selective_scan_step(wide(u), wide(delta), A, wide(Bm), wide(C), D, wide(z),
                                   delta_bias, delta_softplus, state);
    return is_bf16(u) ? y.cast(DType::bf16) : y;
  }
  check_dim(op, u, 2, "u (B, ED)");
  check_dim(op, A, 2, "A (ED, N)");
  const int64_t B = u.size(0), ED = u.size(1), N = A.size(1);
  check_shape(op, delta, {B, ED}, "delta");
  check_shape(op, A, {ED, N}, "A");
  check_shape(op, Bm, {B, N}, "B");
  check_shape(op, C, {B, N}, "C");
  if (D.defined()) check_shape(op, D, {ED}, "D");
  if (z.defined()) check_shape(op, z, {B, ED}, "z");
  if (delta_bias.defined()) check_shape(op, delta_bias, {ED}, "delta_bias");
  check_shape(op, state, {B, ED, N}, "state");
  for (const Tensor* t : {&delta, &A, &Bm, &C, &D, &z, &delta_bias, &state}) {
    if (!t->defined()) continue;
    check_same_dtype(op, u, *t);
    check_same_device(op, u, *t);
  }
  MG_CHECK(!needs_grad({u, delta, A, Bm, C, D, z, delta_bias, state}), op,
           ": inference only (no backward): run it under NoGradGuard or on detached tensors");
  Tensor y = Tensor::empty({B, ED}, u.dtype(), u.device());
  auto step_args = [&]<typename T>() -> ScanArgs<T> {
    return {.B = B, .L = 1, .ED = ED, .N = N, .u = u.data<T>(), .delta = delta.data<T>(),
            .A = A.data<T>(), .Bm = Bm.data<T>(), .C = C.data<T>(), .D = D.data_or_null<T>(),
            .z = z.data_or_null<T>(), .delta_bias = delta_bias.data_or_null<T>(),
            .delta_softplus = delta_softplus, .h0 = state.data<T>(), .y = y.data<T>(),
            .h_last = state.data<T>()};  // the state updated in place
  };
  dispatch_device(u.device(), u.dtype(), op,
                  [&]<typename T>() {
                    cuda::selective_scan_step_forward(step_args.template operator()<T>());
                  },
                  [&]<typename T>() {
                    cpu::selective_scan_step_forward(step_args.template operator()<T>());
                  });
  return y;
}

}  // namespace mg
