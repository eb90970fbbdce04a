// autograd/tape.h — reverse-mode automatic differentiation with a tape (a Wengert list).
//
// Every differentiable op, when grad mode is on and some input requires grad, appends one
// Node: its name, its inputs and outputs, and a backward function that maps the gradients of
// the outputs (dL/dy) to the gradients of the inputs (dL/dx). Nodes are appended in execution
// order, which is already a topological order, so backward is a loop in reverse:
//
//   wanted = {root}                           # tensors of root's graph not yet produced
//   for node in reversed(tape):               # no recursion, no topological sort
//       if no output of node is wanted: skip  # another graph's node: it stays on the tape
//       wanted -= node.outputs; wanted += node's non-leaf inputs
//       douts = [y.grad for y in node.outputs]   (skip the node if none is set)
//       dins  = node.backward(douts)
//       for x, dx in zip(node.inputs, dins): x.grad += dx   (a tensor used twice gets both)
//
// (The code marks root's graph in one such walk first and runs it in a second, so that a
// broken graph is reported before any gradient is touched.)
//
// backward(root) differentiates exactly the graph that produced root, and consumes it: its
// nodes leave the tape and what they saved is freed. Every other node stays, so two graphs
// built one after the other (two losses, a GAN step, a test comparing two devices) can each be
// differentiated, in either order — PyTorch's semantics. A backward that needs a node which
// is gone (an earlier backward consumed it, or tape().clear() removed it) is an mg::Error
// naming the tensor, never a silent no-op. The flip side of a global tape: a forward pass that
// is never differentiated keeps its nodes (and their saved tensors) until tape().clear();
// run evaluation and generation under NoGradGuard, which records nothing.
//
// The tape is per thread. Gradients of intermediate tensors are freed as soon as their
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
  // Indices of the nodes root depends on, in reverse tape order; an mg::Error if some of
  // them are no longer on the tape. Empty for a leaf root.
  std::vector<size_t> graph_of(const Tensor& root) const;
  // Removes the nodes at these indices, freeing what they saved; the others keep their order.
  void erase(std::vector<size_t> indices);

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

// Differentiates the graph that produced `root`, seeded with `droot` (default: ones, which
// requires a one-element root), and removes that graph's nodes from the tape. Other graphs'
// nodes stay. An error if part of root's graph was already consumed.
void backward(const Tensor& root, const Tensor& droot = Tensor());

}  // namespace mg
