#include "core/settings.h"

#include "core/error.h"

namespace mg {

namespace {
Settings g_settings;
}  // namespace

const Settings& settings() { return g_settings; }

void set_settings(const Settings& s) {
  MG_CHECK(s.scan_chunk >= 1, "settings: scan_chunk (T, steps between saved states) must be "
           ">= 1, got ", s.scan_chunk);
  g_settings = s;
}

const char* scan_kernel_name(ScanKernel k) {
  return k == ScanKernel::fast ? "fast" : "sequential";
}

const char* cuda_scan_name(CudaScanVersion v) {
  switch (v) {
    case CudaScanVersion::v1: return "v1";
    case CudaScanVersion::v2: return "v2";
    case CudaScanVersion::v3: return "v3";
  }
  return "?";
}

const char* precision_name(Precision p) {
  switch (p) {
    case Precision::f32: return "f32";
    case Precision::tf32: return "tf32";
    case Precision::bf16: return "bf16";
  }
  return "?";
}

Precision parse_precision(const std::string& name) {
  if (name == "f32") return Precision::f32;
  if (name == "tf32") return Precision::tf32;
  if (name == "bf16") return Precision::bf16;
  throw Error("settings: unknown precision '" + name + "' (expected f32, tf32 or bf16)");
}

ScanKernel parse_scan_kernel(const std::string& name) {
  if (name == "fast") return ScanKernel::fast;
  if (name == "sequential") return ScanKernel::sequential;
  throw Error("settings: unknown CPU scan kernel '" + name + "' (expected fast or sequential)");
}

CudaScanVersion parse_cuda_scan(const std::string& name) {
  if (name == "v1") return CudaScanVersion::v1;
  if (name == "v2") return CudaScanVersion::v2;
  if (name == "v3") return CudaScanVersion::v3;
  throw Error("settings: unknown CUDA scan version '" + name + "' (expected v1, v2 or v3)");
}

std::string describe_settings(const Settings& s) {
  return detail::cat("scan ", scan_kernel_name(s.scan_kernel), " (T ", s.scan_chunk,
                     "), cuda scan ", cuda_scan_name(s.cuda_scan), ", deterministic ",
                     s.deterministic ? "on" : "off", ", precision ", precision_name(s.precision));
}

}  // namespace mg
