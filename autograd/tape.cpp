#include "autograd/tape.h"

#include <algorithm>
#include <ostream>
#include <unordered_set>

#include "core/allocator.h"

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
// same dy to both inputs), so accumulation allocates a new tensor. The sum is the device's
// add_into (core/allocator.h), the add op's kernel: autograd sits below ops/ and cannot call
// ops::add (docs/decisions.md, "Layers").
static void accumulate_grad(const Tensor& x, const Tensor& g) {
  MG_CHECK(g.shape() == x.shape(), "backward: gradient of shape ", shape_str(g.shape()),
           " for a tensor of shape ", shape_str(x.shape()));
  Tensor gx = g.dtype() == x.dtype() ? g : g.cast(x.dtype());
  Tensor cur = x.grad();
  if (!cur.defined()) {
    x.impl().grad = gx.impl_ptr();
    return;
  }
  MG_CHECK(cur.device() == gx.device() && cur.dtype() == gx.dtype(), "backward: a gradient on ",
           gx.device().str(), " (", dtype_name(gx.dtype()), ") for a tensor whose gradient so far "
           "is on ", cur.device().str(), " (", dtype_name(cur.dtype()), ")");
  Tensor sum = Tensor::empty(x.shape(), cur.dtype(), cur.device());
  allocator_for(sum.device()).add_into(sum.raw_data(), cur.raw_data(), gx.raw_data(), sum.numel(),
                                       sum.dtype());
  x.impl().grad = sum.impl_ptr();
}

namespace {

// "the root `loss` (shape ())" / "a tensor of shape (3, 4)": how errors name a tensor.
std::string describe(const Tensor& t, bool is_root) {
  std::string what = is_root ? "the root" : "a tensor";
  if (!t.name().empty()) what += " '" + t.name() + "'";
  return what + " of shape " + shape_str(t.shape());
}

}  // namespace

// One reverse walk over the tape finds root's graph: `wanted` holds the tensors of the graph
// whose producing node has not been met yet. A node whose output is wanted belongs to the
// graph; its inputs that came from other nodes become wanted in turn. Nodes are in execution
// order, so every consumer is met before its producer and one walk suffices. Anything still
// wanted at the end was produced by a node that is no longer on the tape.
std::vector<size_t> Tape::graph_of(const Tensor& root) const {
  std::unordered_set<const TensorImpl*> wanted;
  if (!root.is_leaf()) wanted.insert(&root.impl());
  std::vector<size_t> graph;  // indices into nodes_, in reverse tape order
  for (size_t i = nodes_.size(); i-- > 0 && !wanted.empty();) {
    bool in_graph = false;
    for (const auto& y : nodes_[i].outputs) in_graph = wanted.erase(&y.impl()) > 0 || in_graph;
    if (!in_graph) continue;
    graph.push_back(i);
    for (const auto& x : nodes_[i].inputs)
      if (x.defined() && x.requires_grad() && !x.is_leaf()) wanted.insert(&x.impl());
  }
  if (!wanted.empty()) {
    bool root_gone = wanted.count(&root.impl()) > 0;
    const Tensor lost = root_gone ? root : [&] {
      for (size_t i : graph)  // name one lost tensor, as an input of a node that needs it
        for (const auto& x : nodes_[i].inputs)
          if (x.defined() && wanted.count(&x.impl())) return x;
      return root;
    }();
    throw Error("backward: " + describe(lost, root_gone) +
                " was produced by a node that is no longer on the tape: its graph was already "
                "differentiated by an earlier backward() (which frees the graph it ran) or "
                "removed by tape().clear(). Run the forward pass again to differentiate it "
                "again.");
  }
  return graph;
}

// Removes the nodes at `indices` (any order) and keeps the others in their order. Removed
// nodes are destroyed one at a time, so however long the chain, no destructor recurses.
void Tape::erase(std::vector<size_t> indices) {
  std::sort(indices.begin(), indices.end());
  std::vector<Node> kept;
  kept.reserve(nodes_.size() - indices.size());
  size_t next = 0;
  for (size_t i = 0; i < nodes_.size(); ++i) {
    if (next < indices.size() && indices[next] == i) {
      ++next;
      nodes_[i] = Node{};
    } else {
      kept.push_back(std::move(nodes_[i]));
    }
  }
  nodes_.swap(kept);
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
  const std::vector<size_t> graph = g_tape.graph_of(root);  // throws before touching anything
  NoGradGuard no_grad;  // the backward functions use ordinary ops; record none of them
  // The graph is consumed whether or not its backward completes: a half-run graph must not
  // be run again (it would add some gradients twice).
  struct Consume {
    const std::vector<size_t>& graph;
    ~Consume() { g_tape.erase(graph); }
  } consume{graph};
  accumulate_grad(root, seed);

  for (size_t i : graph) {
    const Node& node = g_tape.nodes()[i];
    bool any = false;
    for (const auto& y : node.outputs) any = any || y.grad().defined();
    if (any) {
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
    }
    for (const auto& y : node.outputs)
      if (!y.impl().retain_grad) y.impl().grad.reset();
  }
}

}  // namespace mg
