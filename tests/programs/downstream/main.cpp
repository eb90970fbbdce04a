// A downstream program: a tiny Mamba LM's loss and one gradient through mambagrad's public
// headers. Prints "downstream ok" and the loss (ln 32 = 3.47 for an untrained model, roughly).
#include <cmath>
#include <cstdio>
#include <vector>

#include "autograd/tape.h"
#include "nn/mamba.h"

int main() {
  mg::nn::MambaConfig c;
  c.d_model = 16;
  c.n_layer = 1;
  c.vocab_size = 32;
  c.d_state = 4;
  mg::nn::MambaLM model(c, 0);
  std::vector<int32_t> ids = {1, 5, 7, 2, 9, 3, 4, 8, 6, 0};
  mg::Tensor loss = model.loss(mg::Tensor::from_vector(ids, {1, 10}));
  mg::backward(loss);
  const double l = loss.item();
  double g2 = 0;  // the embedding's gradient must exist and be finite and non-zero
  for (float v : model.named_parameters()[0].tensor.grad().to_vector<float>()) g2 += v * v;
  if (!std::isfinite(l) || std::fabs(l - std::log(32.0)) > 1.0 || !(g2 > 0) || !std::isfinite(g2)) {
    std::printf("downstream: unexpected loss %g or gradient norm^2 %g\n", l, g2);
    return 1;
  }
  std::printf("downstream ok: loss %.4f\n", l);
  return 0;
}
