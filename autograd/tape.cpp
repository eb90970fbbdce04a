#include "autograd/tape.h"

#include <ostream>

#include "ops/arith.h"

namespace mg {

namespace {
thread_local bool g_grad_enabled = true;
thread_local Tape g_tape;
}  // namespace

bool grad_enabled() { return g_grad_enabled; }
void set_grad_enabled(bool on) { g_grad_enabled = on; }
Tape& tape() { return g_tape; }

void Tape::clear() {
  // Move out and destroy one node at a time: each node only holds tensors (which never point
  // back at nodes), so no destructor recursion happens however long the chain is.
  std::vector<Node> nodes;
  nodes.swap(nodes_);
  for (auto& n : nodes) n = Node{};
}

void Tape::print(std::ostream& os) const {
  auto desc = [](const Tensor& t) {
    std::string s = t.name().empty() ? "" : t.name() + ":";
    return s + shape_str(t.shape());
  };
  for (size_t i = 0; i < nodes_.size(); ++i) {
    const Node& n = nodes_[i];
    os << "  [" << i << "] " << n.name << "(";
    for (size_t k = 0; k < n.inputs.size(); ++k) {
      if (k) os << ", ";
      os << (n.inputs[k].defined() ? desc(n.inputs[k]) : "-");
    }
    os << ") -> ";
    for (size_t k = 0; k < n.outputs.size(); ++k) os << (k ? ", " : "") << desc(n.outputs[k]);
    os << "\n";
  }
}

bool needs_grad(const std::vector<Tensor>& inputs) {
  if (!grad_enabled()) return false;
  for (const auto& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

void record(const std::string& name, const std::vector<Tensor>& inputs,
            const std::vector<Tensor>& outputs, BackwardFn backward) {
  if (!needs_grad(inputs)) return;
  for (const auto& y : outputs) {
    y.impl().requires_grad = true;
    y.impl().is_leaf = false;
  }
  g_tape.push(Node{name, inputs, outputs, std::move(backward)});
}

// x.grad += g, never in place: a gradient tensor may be shared (add's backward hands the
// same dy to both inputs), so accumulation allocates a new tensor.
static void accumulate_grad(const Tensor& x, const Tensor& g) {
  MG_CHECK(g.shape() == x.shape(), "backward: gradient of shape ", shape_str(g.shape()),
           " for a tensor of shape ", shape_str(x.shape()));
  Tensor gx = g.dtype() == x.dtype() ? g : g.to(x.dtype());
  Tensor cur = x.grad();
  x.impl().grad = cur.defined() ? add(cur, gx).impl_ptr() : gx.impl_ptr();
}

void backward(const Tensor& root, const Tensor& droot) {
  MG_CHECK(root.defined() && root.requires_grad(),
           "backward: the root tensor does not require grad (no recorded op produced it from a "
           "tensor with requires_grad)");
  Tensor seed = droot;
  if (!seed.defined()) {
    MG_CHECK(root.numel() == 1, "backward: root of shape ", shape_str(root.shape()),
             " is not a scalar; pass its gradient explicitly");
    seed = Tensor::ones(root.shape(), root.dtype(), root.device());
  }
  check_shape("backward", seed, root.shape(), "gradient");
  NoGradGuard no_grad;  // the backward functions use ordinary ops; record none of them
  accumulate_grad(root, seed);

  auto& nodes = g_tape.nodes();
  for (size_t i = nodes.size(); i-- > 0;) {
    const Node& node = nodes[i];
    bool any = false;
    for (const auto& y : node.outputs) any = any || y.grad().defined();
    if (!any) continue;
    std::vector<Tensor> douts;
    douts.reserve(node.outputs.size());
    for (const auto& y : node.outputs)
      douts.push_back(y.grad().defined() ? y.grad()
                                         : Tensor::zeros(y.shape(), y.dtype(), y.device()));
    std::vector<Tensor> dins = node.backward(douts);
    MG_CHECK(dins.size() == node.inputs.size(), "backward of ", node.name, ": returned ",
             dins.size(), " gradients for ", node.inputs.size(), " inputs");
    for (size_t k = 0; k < dins.size(); ++k) {
      const Tensor& x = node.inputs[k];
      if (x.defined() && x.requires_grad() && dins[k].defined()) accumulate_grad(x, dins[k]);
    }
    for (const auto& y : node.outputs)
      if (!y.impl().retain_grad) y.impl().grad.reset();
  }
  g_tape.clear();
}

}  // namespace mg
