// core/settings.h: the process-wide switches, their validation, the scoped guard and the line
// programs print.
#include <doctest/doctest.h>

#include <string>

#include "core/error.h"
#include "core/settings.h"

using namespace mg;

TEST_CASE("settings: defaults, the guard restores, bad values are refused by name") {
  const Settings defaults;
  CHECK(describe_settings(defaults) == "scan fast (T 64), cuda scan v2, deterministic on, precision f32");
  const std::string before = describe_settings();
  {
    Settings s = settings();
    s.scan_kernel = ScanKernel::sequential;
    s.scan_chunk = 16;
    s.deterministic = false;
    s.precision = Precision::bf16;
    SettingsGuard guard(s);
    CHECK(settings().scan_kernel == ScanKernel::sequential);
    CHECK(describe_settings() == "scan sequential (T 16), cuda scan v2, deterministic off, precision bf16");
  }
  CHECK(describe_settings() == before);
  Settings bad = settings();
  bad.scan_chunk = 0;
  CHECK_THROWS_WITH_AS(set_settings(bad), doctest::Contains("scan_chunk (T, steps between saved states) must be >= 1, got 0"), Error);
  CHECK(describe_settings() == before);  // a refused value changes nothing
  CHECK(parse_scan_kernel("sequential") == ScanKernel::sequential);
  CHECK(parse_cuda_scan("v1") == CudaScanVersion::v1);
  CHECK(parse_cuda_scan("v3") == CudaScanVersion::v3);
  CHECK(std::string(cuda_scan_name(CudaScanVersion::v3)) == "v3");
  CHECK_THROWS_WITH_AS(parse_cuda_scan("v9"), doctest::Contains("expected v1, v2 or v3"), Error);
  CHECK(parse_precision("f32") == Precision::f32);
  CHECK(parse_precision("tf32") == Precision::tf32);
  CHECK(parse_precision("bf16") == Precision::bf16);
  CHECK(std::string(precision_name(Precision::tf32)) == "tf32");
  CHECK_THROWS_WITH_AS(parse_precision("fp16"), doctest::Contains("unknown precision 'fp16' (expected f32, tf32 or bf16)"), Error);
}
