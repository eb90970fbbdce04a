// examples/autograd_tour.cpp — a five-minute walk through mambagrad's autograd.
//
// We build a tiny expression, look at the tape it recorded, run backward, compare the
// gradient with one worked out by hand, and let gradcheck confirm it with finite differences.
//
//   ./build/examples/autograd_tour
#include <cmath>
#include <cstdio>
#include <iostream>
#include <string>

#include "autograd/gradcheck.h"
#include "autograd/tape.h"
#include "ops/arith.h"
#include "ops/reduce.h"
#include "ops/unary.h"
#include "core/error.h"
#include "examples/cli.h"

using namespace mg;

int main(int argc, char** argv) {
  examples::Cli cli("autograd_tour", "Walks through mambagrad's tape autograd on a tiny expression: "
                    "forward, the recorded tape, backward, and a gradient check.");
  if (!cli.parse(argc, argv)) return cli.exit_code();
  std::printf("== 1. Leaves: tensors we want gradients for ==\n");
  manual_seed(0);
  Tensor w = Tensor::from_vector<double>({0.5, -1.0, 2.0}, {3}).set_name("w").requires_grad_();
  Tensor b = Tensor::from_vector<double>({0.1}, {1}).set_name("b").requires_grad_();
  Tensor x = Tensor::from_vector<double>({1.0, 2.0, -0.5}, {3}).set_name("x");  // data: no grad
  std::cout << "w = " << w << "\nb = " << b << "\nx = " << x << "\n\n";

  std::printf("== 2. Forward: loss = sum(silu(w * x + b)) ==\n");
  // Each op runs at once (eager) and, because w and b require grad, appends a node to the tape.
  Tensor pre = (w * x + b).set_name("pre");  // (3)
  Tensor act = silu(pre).set_name("act");    // (3)
  Tensor loss = sum(act).set_name("loss");   // ()
  act.retain_grad();  // keep an intermediate gradient so we can look at it afterwards
  std::cout << "loss = " << loss.item() << "\n\n";

  std::printf("== 3. The tape: one node per op, in execution order ==\n");
  tape().print(std::cout);
  std::printf("\n");

  std::printf("== 4. Backward: walk the tape in reverse, accumulating d(loss)/d(.) ==\n");
  backward(loss);
  std::cout << "dloss/dact = " << act.grad() << "\n";
  std::cout << "dloss/dw   = " << w.grad() << "\n";
  std::cout << "dloss/db   = " << b.grad() << "\n";
  std::printf("tape after backward: %zu nodes (backward consumes loss's graph and frees what it "
              "saved)\n\n", tape().size());

  std::printf("== 5. By hand: silu'(p) = s(p) (1 + p (1 - s(p))), s = sigmoid ==\n");
  auto wv = w.to_vector<double>(), xv = x.to_vector<double>(), gw = w.grad().to_vector<double>();
  double bv = b.item(), db = 0, worst = 0;
  for (int i = 0; i < 3; ++i) {
    double p = wv[i] * xv[i] + bv, s = 1 / (1 + std::exp(-p)), d = s * (1 + p * (1 - s));
    worst = std::max(worst, std::abs(gw[i] - d * xv[i]));
    db += d;
  }
  worst = std::max(worst, std::abs(b.grad().item() - db));
  std::printf("max |tape - hand| = %.3g\n\n", worst);

  std::printf("== 6. gradcheck: central differences in f64 against the tape ==\n");
  auto fn = [&](const std::vector<Tensor>& in) { return sum(silu(in[0] * x + in[1])); };
  GradcheckResult r = gradcheck(fn, {w, b});
  std::cout << r.report() << "\n\n";

  std::printf("== 7. Two graphs on one tape: backward(root) runs only root's graph ==\n");
  // A second loss from the same leaf w, and a value that is never differentiated. backward on
  // loss2 runs loss2's nodes only; the other graph's node stays on the tape.
  w.zero_grad();
  Tensor loss2 = sum(w * w).set_name("loss2");  // dloss2/dw = 2 w
  Tensor unused = exp(w).set_name("unused");    // recorded, never differentiated
  std::printf("tape now: %zu nodes\n", tape().size());
  backward(loss2);
  std::cout << "dloss2/dw = " << w.grad() << "  (= 2 w)\n";
  std::printf("tape after backward(loss2): %zu node(s) left:\n", tape().size());
  tape().print(std::cout);
  bool refused = false;
  try {
    backward(loss2);  // its graph is consumed: an error, never a silent no-op
  } catch (const Error& e) {
    refused = true;
    std::printf("backward(loss2) a second time -> mg::Error: %s\n", e.what());
  }
  tape().clear();  // drops `unused`'s node (evaluation would run under NoGradGuard instead)
  return r.ok && worst < 1e-12 && refused ? 0 : 1;
}
