// core/settings.h — every process-wide switch of mambagrad, in one place.
//
// A few choices change how ops compute without changing what they compute: which scan kernel
// runs, how often it saves its state, whether GPU reductions may use float atomics, whether
// cuBLAS may use TF32, which precision training computes in. They are not arguments of every op (that would thread a flag through
// every layer) but one struct, read by the ops that care:
//
//   Settings s = settings();          // a copy of the current settings
//   s.scan_kernel = ScanKernel::sequential;
//   SettingsGuard guard(s);           // in force until the guard goes out of scope
//
// Programs set them once at start-up (from flags) and print describe_settings() with their
// configuration, so a log always says how its numbers were computed. Change them between ops,
// never while another thread runs ops (they are plain process-wide values).
#pragma once
#include <cstdint>
#include <string>

namespace mg {

// The CPU selective scan: the fused kernel with chunked recomputation, or the plain loop.
enum class ScanKernel { fast, sequential };
// The CUDA selective scan kernel (docs/cuda_scan.md): v1 the teaching port, v2 the warp scan,
// v3 the L-split walks and tiles (cuda/selective_scan/v3.cuh).
enum class CudaScanVersion { v1, v2, v3 };
// The precision ops compute in (docs/mixed_precision.md says which tensor is in which):
//   f32   everything in f32 (the default; bitwise the f32 path of every test);
//   tf32  f32 tensors, but cuBLAS may use TF32 tensor cores for f32 GEMMs (10-bit mantissa
//         products, f32 accumulation; ~1e-3 relative). CPU GEMMs stay f32.
//   bf16  mixed precision: parameters, gradients and optimizer state stay f32 (master
//         weights); linear() casts its input and weight to bf16 and returns bf16 (f32
//         accumulation), so activations between the projections are bf16; norms, softmax /
//         cross-entropy, the residual stream and the scan's state stay f32. On the CPU every
//         bf16 op is emulated exactly (f32 kernel on the widened values, result rounded).
// Only f32 tensors are affected: f64 (gradcheck) ignores the setting.
enum class Precision { f32, tf32, bf16 };

constexpr int64_t kDefaultScanChunk = 64;  // T: see docs/selective_scan.md for the choice

struct Settings {
  // ---- the selective scan ------------------------------------------------------------
  ScanKernel scan_kernel = ScanKernel::fast;        // CPU tensors
  int64_t scan_chunk = kDefaultScanChunk;           // T >= 1: steps between saved states
  CudaScanVersion cuda_scan = CudaScanVersion::v2;  // CUDA tensors
  // ---- the GPU -------------------------------------------------------------------------
  // No float atomics in reductions: results bit-identical run to run (default on).
  bool deterministic = true;
  // ---- numerics -------------------------------------------------------------------------
  Precision precision = Precision::f32;  // f32 | tf32 | bf16, see the enum above
};

const Settings& settings();
void set_settings(const Settings& s);  // checks every field (an mg::Error names the bad one)

// Sets `s` for the guard's lifetime, then restores what was there (tests, benchmarks).
class SettingsGuard {
 public:
  explicit SettingsGuard(const Settings& s) : prev_(settings()) { set_settings(s); }
  ~SettingsGuard() { set_settings(prev_); }
  SettingsGuard(const SettingsGuard&) = delete;
  SettingsGuard& operator=(const SettingsGuard&) = delete;

 private:
  Settings prev_;
};

// "scan fast (T 64), cuda scan v2, deterministic on, precision f32": one line for logs.
std::string describe_settings(const Settings& s = settings());
const char* scan_kernel_name(ScanKernel k);
const char* cuda_scan_name(CudaScanVersion v);
const char* precision_name(Precision p);
// Parse "fast" / "sequential", "v1" / "v2" / "v3" and "f32" / "tf32" / "bf16"; an mg::Error
// lists the accepted names.
ScanKernel parse_scan_kernel(const std::string& name);
CudaScanVersion parse_cuda_scan(const std::string& name);
Precision parse_precision(const std::string& name);

}  // namespace mg
