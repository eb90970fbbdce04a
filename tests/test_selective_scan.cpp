// The selective scan: gradchecks of every input in f64, fast == sequential == composed
// reference in f32, softplus edges, exp underflow, chunked processing of a long sequence,
// determinism across thread counts, the O(B*L*ED) memory claim, and which kernel runs.
// (The vectorised exp/softplus the fast kernels use: tests/test_vmath.cpp.)
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <tuple>
#include <vector>

#include "autograd/gradcheck.h"
#include "autograd/tape.h"
#include "core/allocator.h"
#include "core/settings.h"
#include "ops/convert.h"
#include "ops/arith.h"
#include "ops/selective_scan/kernels.h"
#include "ops/selective_scan/selective_scan.h"
#include "ops/shape.h"

#ifdef _OPENMP
#include <omp.h>
#endif

using namespace mg;

namespace {

// Inputs of one scan, in the op's argument order; optional ones may be undefined.
struct ScanInputs {
  Tensor u, delta, A, B, C, D, z, bias, h0;
  bool softplus = true;
  std::vector<Tensor> list() const { return {u, delta, A, B, C, D, z, bias, h0}; }
};
struct Optionals {
  bool D = true, z = true, bias = true, h0 = true, softplus = true;
};

// Realistic inputs: A = -exp(A_log) with the S4D-real init A_log[d, n] = log(n + 1);
// softplus(bias) log-uniform in [1e-3, 0.1] (Mamba's dt init); delta_raw ~ N(0, 0.5^2).
ScanInputs make_args(int64_t B, int64_t L, int64_t ED, int64_t N, Optionals o, DType dt,
                   uint64_t seed) {
  Generator g(seed);
  ScanInputs a;
  a.softplus = o.softplus;
  a.u = Tensor::randn({B, L, ED}, dt, &g);
  a.delta = o.softplus ? Tensor::randn({B, L, ED}, dt, &g) * 0.5
                       : Tensor::uniform({B, L, ED}, 0.001, 0.5, dt, &g);
  std::vector<double> A(ED * N);
  for (int64_t d = 0; d < ED; ++d)
    for (int64_t n = 0; n < N; ++n) A[d * N + n] = -std::exp(std::log(double(n + 1)));
  a.A = to(Tensor::from_vector<double>(A, {ED, N}), dt);
  a.B = Tensor::randn({B, L, N}, dt, &g);
  a.C = Tensor::randn({B, L, N}, dt, &g);
  if (o.D) a.D = Tensor::randn({ED}, dt, &g);
  if (o.z) a.z = Tensor::randn({B, L, ED}, dt, &g);
  if (o.bias && !o.softplus) a.bias = Tensor::uniform({ED}, 0.0, 0.1, dt, &g);  // delta > 0
  if (o.bias && o.softplus) {
    Tensor log_dt = Tensor::uniform({ED}, std::log(1e-3), std::log(0.1), dt, &g);
    std::vector<double> bias(ED);
    auto v = to(log_dt, DType::f64).to_vector<double>();
    for (int64_t d = 0; d < ED; ++d) bias[d] = std::exp(v[d]) + std::log(-std::expm1(-std::exp(v[d])));
    a.bias = to(Tensor::from_vector<double>(bias, {ED}), dt);
  }
  if (o.h0) a.h0 = Tensor::randn({B, ED, N}, dt, &g) * 0.5;
  return a;
}

// The op with this kernel choice and chunk length in force (core/settings.h); the backward runs
// the kernels the forward chose.
template <typename... Args>
ScanResult scan_with(ScanKernel impl, int64_t chunk, const Args&... args) {
  Settings s = settings();
  s.scan_kernel = impl;
  s.scan_chunk = chunk;
  SettingsGuard guard(s);
  return selective_scan(args...);
}
ScanResult run(const ScanInputs& a, ScanKernel impl, int64_t chunk = kDefaultScanChunk) {
  return scan_with(impl, chunk, a.u, a.delta, a.A, a.B, a.C, a.D, a.z, a.bias, a.softplus, a.h0);
}
ScanResult run_reference(const ScanInputs& a) {
  return selective_scan_reference(a.u, a.delta, a.A, a.B, a.C, a.D, a.z, a.bias, a.softplus, a.h0);
}

// y and h_last as one flat vector, so one gradcheck covers both outputs.
Tensor flat(const ScanResult& r) { return cat({reshape(r.y, {-1}), reshape(r.h_last, {-1})}, 0); }

// Forward + backward with fixed cotangents; returns y, h_last and every gradient (undefined
// where the input is absent).
std::vector<Tensor> fwd_bwd(const ScanInputs& args, const std::function<ScanResult(const ScanInputs&)>& f,
                            uint64_t seed = 99) {
  ScanInputs a = args;
  for (Tensor* t : {&a.u, &a.delta, &a.A, &a.B, &a.C, &a.D, &a.z, &a.bias, &a.h0})
    if (t->defined()) *t = t->clone().requires_grad_();
  tape().clear();
  ScanResult r = f(a);
  Generator g(seed);
  Tensor dy = Tensor::randn(r.y.shape(), r.y.dtype(), &g);
  Tensor dh = Tensor::randn(r.h_last.shape(), r.y.dtype(), &g);
  Tensor root = cat({reshape(r.y, {-1}), reshape(r.h_last, {-1})}, 0);
  backward(root, cat({reshape(dy, {-1}), reshape(dh, {-1})}, 0));
  std::vector<Tensor> out{r.y.detach(), r.h_last.detach()};
  for (const Tensor& t : a.list()) out.push_back(t.defined() ? t.grad() : Tensor());
  return out;
}
const std::string kNames[] = {"y", "h_last", "du", "ddelta", "dA", "dB", "dC", "dD", "dz", "dbias", "dh0"};

// max |a - b| / max |b|: the error relative to the tensor's scale (elementwise relative error
// is meaningless for entries that are near zero by cancellation).
double rel_error(const Tensor& a, const Tensor& b) {
  auto x = to(a, DType::f64).to_vector<double>(), y = to(b, DType::f64).to_vector<double>();
  double diff = 0, scale = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    diff = std::max(diff, std::abs(x[i] - y[i]));
    scale = std::max(scale, std::abs(y[i]));
  }
  return scale > 0 ? diff / scale : diff;
}
bool bitwise_equal(const Tensor& a, const Tensor& b) {
  if (a.defined() != b.defined()) return false;
  if (!a.defined()) return true;
  return a.shape() == b.shape() && std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

}  // namespace

TEST_CASE("selective_scan: gradcheck in f64 of every input and through h_last") {
  const int64_t T = 4;  // small chunk so that L covers {1, 7, T-1, T, T+1, 3T+5}
  const int64_t Ls[] = {1, 7, T - 1, T, T + 1, 3 * T + 5};
  const int64_t Bs[] = {1, 3}, EDs[] = {1, 5, 33}, Ns[] = {1, 4, 16};
  int cases = 0;
  // 18 fast cases: every L three times; (ED, N) runs through all 9 pairs twice, B alternates,
  // the optional-input mask runs through all 16 subsets of {D, z, bias, h0}, and softplus is
  // off in every third case. Then 6 sequential-loop cases.
  for (int i = 0; i < 24; ++i) {
    const ScanKernel impl = i < 18 ? ScanKernel::fast : ScanKernel::sequential;
    const int64_t L = Ls[i % 6], B = Bs[i % 2], ED = EDs[(i / 2) % 3], N = Ns[(i / 6) % 3];
    const int mask = (i * 7) % 16;
    Optionals o{bool(mask & 1), bool(mask & 2), bool(mask & 4), bool(mask & 8), i % 3 != 2};
    ScanInputs a = make_args(B, L, ED, N, o, DType::f64, 1000 + i);
    CAPTURE(i);
    CAPTURE(std::string(impl == ScanKernel::fast ? "fast" : "sequential"));
    CAPTURE(B); CAPTURE(L); CAPTURE(ED); CAPTURE(N); CAPTURE(mask); CAPTURE(o.softplus);
    GradcheckOptions opts;
    // <r, out> sums up to ~2000 outputs: at eps = 1e-6 its rounding (~1e-14) over 2 eps reaches
    // 1e-8 absolute; eps = 1e-5 balances it against the O(eps^2) truncation.
    opts.eps = 1e-5;
    opts.tolerance = 1e-6;
    auto res = gradcheck(
        [&](const std::vector<Tensor>& x) {
          return flat(scan_with(impl, T, x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7],
                                a.softplus, x[8]));
        },
        a.list(), opts);
    CHECK_MESSAGE(res.ok, res.report());
    ++cases;
  }
  MESSAGE(cases << " gradcheck scan cases");
  tape().clear();
}

TEST_CASE("selective_scan: gradcheck of the composed reference (f64, small)") {
  ScanInputs a = make_args(2, 5, 3, 4, Optionals{}, DType::f64, 7);
  auto res = gradcheck(
      [&](const std::vector<Tensor>& x) {
        return flat(selective_scan_reference(x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7],
                                             true, x[8]));
      },
      a.list());
  CHECK_MESSAGE(res.ok, res.report());
}

TEST_CASE("selective_scan: fast == sequential == composed reference in f32, realistic inputs") {
  struct Case { int64_t B, L, ED, N; Optionals o; bool with_reference; };
  const Case cases[] = {
      {2, 4096, 37, 16, Optionals{}, true},
      {3, 300, 64, 64, Optionals{true, false, true, false, true}, true},
      {1, 1000, 20, 8, Optionals{false, false, false, false, true}, true},
      {2, 777, 48, 16, Optionals{true, true, false, true, false}, false},
      {2, 333, 50, 32, Optionals{}, false},  // N = 4, 8, 16, 32: the N-specialised f32 kernels
      {3, 129, 17, 4, Optionals{true, true, true, true, false}, false},
      {2, 200, 33, 5, Optionals{}, false},  // other N: the generic fast kernel
      // ED 300 = 19 channel blocks = 3 backward groups (the last block 12 lanes wide), B 1:
      // the fixed kernel's dB/dC summed over groups
      {1, 150, 300, 16, Optionals{true, true, true, true, true}, false},
  };
  for (const Case& c : cases) {
    CAPTURE(c.B); CAPTURE(c.L); CAPTURE(c.ED); CAPTURE(c.N);
    ScanInputs a = make_args(c.B, c.L, c.ED, c.N, c.o, DType::f32, 5 + c.L);
    auto fast = fwd_bwd(a, [](const ScanInputs& x) { return run(x, ScanKernel::fast); });
    auto seq = fwd_bwd(a, [](const ScanInputs& x) { return run(x, ScanKernel::sequential); });
    std::vector<Tensor> ref;
    if (c.with_reference) ref = fwd_bwd(a, run_reference);
    for (size_t k = 0; k < fast.size(); ++k) {
      CAPTURE(kNames[k]);
      REQUIRE(fast[k].defined() == seq[k].defined());
      if (!fast[k].defined()) continue;
      double e_seq = rel_error(fast[k], seq[k]);
      CHECK(e_seq < 1e-5);
      if (c.with_reference) {
        double e_ref = rel_error(ref[k], seq[k]);
        CHECK(e_ref < 1e-5);
        if (c.L == 4096) MESSAGE(kNames[k] << ": fast vs seq " << e_seq << ", reference vs seq " << e_ref);
      }
    }
  }
}

TEST_CASE("selective_scan: softplus at -100, -20, 0, 20, 21, 100 in both directions") {
  // B = 6 sequences of one step, ED = N = 1, u = B = C = 1, no h0: y = delta = softplus(r)
  // and dy/d(delta_raw) = sigmoid(r), exactly 1 above the threshold 20.
  const std::vector<double> r{-100, -20, 0, 20, 21, 100};
  for (DType dt : {DType::f32, DType::f64}) {
    for (ScanKernel impl : {ScanKernel::fast, ScanKernel::sequential}) {
      ScanInputs a;
      a.u = Tensor::ones({6, 1, 1}, dt);
      a.delta = to(Tensor::from_vector<double>(r, {6, 1, 1}), dt);
      a.A = Tensor::full({1, 1}, -1.0, dt);
      a.B = Tensor::ones({6, 1, 1}, dt);
      a.C = Tensor::ones({6, 1, 1}, dt);
      auto out = fwd_bwd(a, [impl](const ScanInputs& x) { return run(x, impl); });
      auto y = to(out[0], DType::f64).to_vector<double>();
      Tensor delta_leaf = a.delta.clone().requires_grad_();
      tape().clear();
      ScanResult res = scan_with(impl, 4, a.u, delta_leaf, a.A, a.B, a.C);
      backward(res.y, Tensor::ones({6, 1, 1}, dt));
      auto g = to(delta_leaf.grad(), DType::f64).to_vector<double>();
      const double eps = dt == DType::f32 ? 1e-6 : 1e-14;
      for (size_t i = 0; i < r.size(); ++i) {
        CAPTURE(r[i]);
        const double sp = r[i] > 20 ? r[i] : std::log1p(std::exp(r[i]));
        const double sg = r[i] > 20 ? 1.0 : 1.0 / (1.0 + std::exp(-r[i]));
        CHECK(std::isfinite(y[i]));
        CHECK(std::isfinite(g[i]));
        if (dt == DType::f32 && r[i] == -100) {  // below FLT_MIN: gradual underflow or 0
          CHECK(std::abs(y[i]) < 1e-38);
          CHECK(std::abs(g[i]) < 1e-38);
          continue;
        }
        CHECK(y[i] == doctest::Approx(sp).epsilon(eps));
        CHECK(g[i] == doctest::Approx(sg).epsilon(eps));
      }
    }
  }
  tape().clear();
}

TEST_CASE("selective_scan: huge |delta * A| underflows exp to 0 and stays finite") {
  for (ScanKernel impl : {ScanKernel::fast, ScanKernel::sequential}) {
    ScanInputs a = make_args(2, 9, 17, 4, Optionals{}, DType::f32, 3);
    a.delta = a.delta + 100.0;   // delta ~ 100
    a.A = a.A * 1e30;            // delta * A ~ -1e32: exp(.) = 0 exactly
    auto out = fwd_bwd(a, [impl](const ScanInputs& x) { return run(x, impl, 4); });
    for (size_t k = 0; k < out.size(); ++k) {
      CAPTURE(kNames[k]);
      if (!out[k].defined()) continue;
      for (float v : out[k].to_vector<float>()) REQUIRE(std::isfinite(v));
    }
    // With A_bar = 0 the state forgets everything: h_last = delta_L u_L B_L.
    auto h = out[1].to_vector<float>();
    auto u = a.u.to_vector<float>(), d = a.delta.to_vector<float>(), B = a.B.to_vector<float>();
    auto bias = a.bias.to_vector<float>();
    const int64_t L = 9, ED = 17, N = 4;
    const int64_t i = (0 * L + L - 1) * ED + 5;  // b = 0, t = L-1, d = 5
    CHECK(h[5 * N + 2] == doctest::Approx((d[i] + bias[5]) * u[i] * B[(L - 1) * N + 2]).epsilon(1e-5));
  }
}

TEST_CASE("selective_scan: scanning [x1, x2] == scanning x2 from h_last(x1), gradients too") {
  const int64_t B = 2, L = 50, L1 = 21, ED = 19, N = 8;
  ScanInputs a = make_args(B, L, ED, N, Optionals{}, DType::f32, 11);
  auto piece = [&](const Tensor& t, int64_t s, int64_t e) { return t.defined() ? slice(t, 1, s, e) : t; };
  for (ScanKernel impl : {ScanKernel::fast, ScanKernel::sequential}) {
    CAPTURE(std::string(impl == ScanKernel::fast ? "fast" : "sequential"));
    auto whole = fwd_bwd(a, [impl](const ScanInputs& x) { return run(x, impl, 8); });
    // Two calls chained through h_last, as training over chunks of a long sequence does.
    auto chained = fwd_bwd(a, [&](const ScanInputs& x) {
      ScanInputs x1 = x, x2 = x;
      for (auto [p1, p2, full] : {std::tuple{&x1.u, &x2.u, &x.u}, {&x1.delta, &x2.delta, &x.delta},
                                  {&x1.B, &x2.B, &x.B}, {&x1.C, &x2.C, &x.C}, {&x1.z, &x2.z, &x.z}}) {
        *p1 = piece(*full, 0, L1);
        *p2 = piece(*full, L1, L);
      }
      ScanResult r1 = run(x1, impl, 8);
      x2.h0 = r1.h_last;
      ScanResult r2 = run(x2, impl, 8);
      return ScanResult{cat({r1.y, r2.y}, 1), r2.h_last};
    });
    for (size_t k = 0; k < whole.size(); ++k) {
      CAPTURE(kNames[k]);
      if (k < 2) CHECK(bitwise_equal(whole[k], chained[k]));  // the forward is exact
      else CHECK(rel_error(chained[k], whole[k]) < 1e-6);
    }
  }
}

TEST_CASE("selective_scan: forward and backward are bitwise identical across runs and threads") {
 for (int64_t N : {16, 12}) {  // the N-specialised kernel and the generic one
  CAPTURE(N);
  // ED 140: 9 channel blocks, two backward groups of the N-specialised kernel
  ScanInputs a = make_args(3, 300, 140, N, Optionals{}, DType::f32, 21);
  auto f = [](const ScanInputs& x) { return run(x, ScanKernel::fast, 32); };
#ifdef _OPENMP
  const int saved = omp_get_max_threads();
  omp_set_num_threads(2);
#endif
  auto run1 = fwd_bwd(a, f), run2 = fwd_bwd(a, f);
#ifdef _OPENMP
  omp_set_num_threads(1);
#endif
  auto run3 = fwd_bwd(a, f);
#ifdef _OPENMP
  omp_set_num_threads(saved);
#endif
  for (size_t k = 0; k < run1.size(); ++k) {
    CAPTURE(kNames[k]);
    CHECK(bitwise_equal(run1[k], run2[k]));
    CHECK(bitwise_equal(run1[k], run3[k]));
  }
 }
}

TEST_CASE("selective_scan: fwd+bwd peak memory is O(B*L*ED), not O(B*L*ED*N)") {
  // Everything counted: inputs, outputs, the saved chunk states, the cotangent, the gradients.
  auto peak_for = [](int64_t N) {
    tape().clear();
    reset_peak_memory();
    const int64_t before = memory_stats().current_bytes;
    {
      ScanInputs a = make_args(2, 4096, 64, N, Optionals{}, DType::f32, 5);
      fwd_bwd(a, [](const ScanInputs& x) { return run(x, ScanKernel::fast); });
    }
    return memory_stats().peak_bytes - before;
  };
  const double p16 = double(peak_for(16)), p64 = double(peak_for(64));
  const double materialised = 2.0 * 4096 * 64 * 64 * 4;  // one (B, L, ED, N) f32 tensor at N=64
  MESSAGE("peak bytes: N=16 " << p16 << ", N=64 " << p64 << " (ratio " << p64 / p16
                              << "); one (B,L,ED,N) tensor at N=64 is " << materialised);
  CHECK(p64 / p16 < 1.5);
}

TEST_CASE("selective_scan: bad shapes and dtypes throw errors naming the op") {
  ScanInputs a = make_args(2, 5, 3, 4, Optionals{}, DType::f32, 1);
  CHECK_THROWS_WITH_AS(selective_scan(a.u, a.delta, a.A, reshape(a.C, {2, 4, 5}), a.C),
                       doctest::Contains("selective_scan"), Error);
  CHECK_THROWS_AS(selective_scan(a.u, to(a.delta, DType::f64), a.A, a.B, a.C), Error);
  CHECK_THROWS_AS(selective_scan(a.u, a.delta, a.A, a.B, a.C, Tensor::ones({4})), Error);
  CHECK_THROWS_AS(selective_scan(a.u, a.delta, a.A, a.B, a.C, {}, {}, {}, true,
                                 Tensor::zeros({2, 3, 5})),
                  Error);
  CHECK_THROWS_AS(scan_with(ScanKernel::fast, 0, a.u, a.delta, a.A, a.B, a.C), Error);
}

TEST_CASE("selective_scan: choose_scan_kernel follows the settings and the sizes") {
  // T: the element type (float or double); no GPU needed, the choice only names the kernels.
  auto chosen = []<typename T>(T, Device dev, int64_t N, ScanKernel k, CudaScanVersion v) {
    Settings s = settings();
    s.scan_kernel = k;
    s.cuda_scan = v;
    SettingsGuard guard(s);
    const ScanKernelPair<T> pair = choose_scan_kernel<T>(dev, N);
    return std::string(pair.name) + (pair.saves_chunk_states ? "" : " (saves nothing)");
  };
  const Device cpu = Device::cpu(), gpu = Device::cuda(0);
  const auto fast = ScanKernel::fast, seq = ScanKernel::sequential;
  const auto v1 = CudaScanVersion::v1, v2 = CudaScanVersion::v2;
  CHECK(chosen(0.0f, cpu, 16, fast, v2) == "fixed");  // f32 with N in {4, 8, 16, 32}
  CHECK(chosen(0.0f, cpu, 32, fast, v1) == "fixed");
  CHECK(chosen(0.0f, cpu, 12, fast, v2) == "fast");   // any other N
  CHECK(chosen(0.0, cpu, 16, fast, v2) == "fast");    // f64
  CHECK(chosen(0.0f, cpu, 16, seq, v2) == "sequential (saves nothing)");
  CHECK(chosen(0.0, cpu, 5, seq, v1) == "sequential (saves nothing)");
  if (cuda_compiled()) {
    CHECK(chosen(0.0f, gpu, 16, seq, v1) == "cuda v1");  // scan_kernel is for CPU tensors
    CHECK(chosen(0.0f, gpu, 5, fast, v2) == "cuda v2");
  } else {
    CHECK_THROWS_AS(chosen(0.0f, gpu, 16, fast, v2), Error);
  }
  CHECK_THROWS_AS(chosen(0.0, gpu, 16, fast, v2), Error);  // CUDA kernels are f32
}
