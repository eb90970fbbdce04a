// examples/cuda_scan_flag.h — the programs' `--cuda-scan v1|v2|v3` flag: which CUDA selective-scan
// kernel family a run uses (Settings::cuda_scan, core/settings.h; docs/cuda_scan.md). v2 is the
// default: v3 becomes it once it has passed on a GPU (docs/decisions.md). The flag exists so that
// a GPU run can time a whole training step on each (bench_train --device cuda --cuda-scan v3).
// Ignored on the CPU. The run's settings line says "cuda scan vN".
#pragma once
#include <string>

#include "core/settings.h"
#include "examples/cli.h"

namespace mg::examples {

inline void add_cuda_scan_flag(Cli& cli, std::string* value) {
  cli.add("--cuda-scan", value,
          "the CUDA scan kernels: v1 (teaching port), v2 (default), v3 (segment walks; not yet "
          "run on a GPU); docs/cuda_scan.md. No effect on the CPU",
          {.choices = {"v1", "v2", "v3"}});
}

// After parsing: in force for the rest of the program.
inline void apply_cuda_scan(const std::string& value) {
  Settings s = settings();
  s.cuda_scan = parse_cuda_scan(value);
  set_settings(s);
}

}  // namespace mg::examples
