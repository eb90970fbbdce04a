// nn/init.h — Mamba's parameter initialisation, exactly as the reference implementation
// (state-spaces `Mamba.__init__` + `_init_weights`; mamba-reference.md section 1.4):
//
//   parameter          initial value                                     why
//   embeddings         N(0, 0.02)                                        GPT-2 style
//   in_proj, x_proj    U(-1/sqrt(fan_in), +1/sqrt(fan_in))               framework default
//   conv1d weight, bias U(-1/sqrt(K), +1/sqrt(K))                        default, fan_in = K
//   dt_proj.weight     U(-R^-1/2, +R^-1/2)
//   dt_proj.bias       softplus^-1(dt), dt log-uniform in [dt_min, dt_max], dt >= dt_init_floor,
//                      softplus^-1(dt) = dt + ln(-expm1(-dt)) = ln(e^dt - 1)
//                      -> the initial step sizes delta = softplus(bias) span [1e-3, 1e-1]
//   A_log[d, n]        ln(n + 1)                                         S4D-Real: A_n = -(n+1)
//   D                  1                                                 skip connection
//   out_proj           U(-1/sqrt(ED), +1/sqrt(ED)) / sqrt(n_layer)       residual-path rescale
//   norms              1
//   lm_head (untied)   N(0, 0.02)
//
// All draws come from one Generator in a fixed order (embedding, then layer by layer), so a
// seed gives the same model on every machine and thread count. Values are written into the
// existing parameter tensors (their dtype; CPU), so handles held elsewhere stay valid.
#pragma once
#include "core/rng.h"

namespace mg::nn {

class MambaLM;
class MambaMixer;
struct MambaConfig;

void init_mamba(MambaLM& model, Generator& gen);
void init_mixer(MambaMixer& mixer, const MambaConfig& cfg, Generator& gen);

// softplus^-1(y) = y + ln(-expm1(-y)) = ln(e^y - 1), accurate for small y (y > 0).
double inverse_softplus(double y);

}  // namespace mg::nn
