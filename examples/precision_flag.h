// examples/precision_flag.h — the programs' one `--precision f32|tf32|bf16` flag.
//
// It sets Settings::precision (core/settings.h), the one switch the C++ API has for this, and
// nothing else: every op reads the setting (docs/mixed_precision.md says which tensor is in
// which precision). The run's settings line (describe_settings) then says "precision bf16".
#pragma once
#include <string>

#include "core/settings.h"
#include "examples/cli.h"

namespace mg::examples {

inline void add_precision_flag(Cli& cli, std::string* value) {
  cli.add("--precision", value,
          "f32; tf32 (cuBLAS may use TF32 for f32 GEMMs); bf16 (mixed precision: bf16 GEMMs "
          "and activations, f32 weights, norms, residual and scan state; docs/mixed_precision.md)",
          {.choices = {"f32", "tf32", "bf16"}});
}

// After parsing: in force for the rest of the program.
inline void apply_precision(const std::string& value) {
  Settings s = settings();
  s.precision = parse_precision(value);
  set_settings(s);
}

}  // namespace mg::examples
