// autograd/tape.h — reverse-mode automatic differentiation with a tape (a Wengert list).
//
// Every differentiable op, when grad mode is on and some input requires grad, appends one
// Node: its name, its inputs and outputs, and a backward function that maps the gradients of
// the outputs (dL/dy) to the gradients of the inputs (dL/dx). Nodes are appended in execution
// order, which is already a topological order, so backward is one loop in reverse:
//
//   for node in reversed(tape):           # no recursion, no topological sort
//       douts = [y.grad for y in node.outputs]   (skip the node if none is set)
//       dins  = node.backward(douts)
//       for x, dx in zip(node.inputs, dins): x.grad += dx   (a tensor used twice gets both)
//
// The tape is per thread. backward() consumes it: afterwards the tape is empty and everything
// the nodes saved is freed. Gradients of intermediate tensors are freed as soon as their
// producing node has run (unless retain_grad() was called); leaves keep theirs, accumulated
// with += across backward calls until zero_grad().
#pragma once
#include <functional>
#include <iosfwd>
#include <string>
#include <vector>

#include "autograd/grad_mode.h"
#include "core/tensor.h"

namespace mg {

// Receives one gradient per output (zeros for outputs that received none) and returns one
// per input (an undefined Tensor where the input needs none).
using BackwardFn = std::function<std::vector<Tensor>(const std::vector<Tensor>& douts)>;

struct Node {
  std::string name;
  std::vector<Tensor> inputs;
  std::vector<Tensor> outputs;
  BackwardFn backward;
};

class Tape {
 public:
  const std::vector<Node>& nodes() const { return nodes_; }
  size_t size() const { return nodes_.size(); }
  void push(Node n) { nodes_.push_back(std::move(n)); }
  void clear();  // frees nodes one by one, front to back (never recursive)
  void print(std::ostream& os) const;

 private:
  std::vector<Node> nodes_;
};

Tape& tape();  // this thread's tape

// True when grad mode is on and at least one defined input requires grad.
bool needs_grad(const std::vector<Tensor>& inputs);

// Appends a node if needs_grad(inputs); marks the outputs requires_grad and non-leaf.
// Ops call this after computing their outputs:  record("exp", {x}, {y}, [y](auto& d) {...});
void record(const std::string& name, const std::vector<Tensor>& inputs,
            const std::vector<Tensor>& outputs, BackwardFn backward);

// Runs the tape backwards from `root`, seeded with `droot` (default: ones, which requires a
// one-element root). Clears the tape afterwards.
void backward(const Tensor& root, const Tensor& droot = Tensor());

}  // namespace mg
