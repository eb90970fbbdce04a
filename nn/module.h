// nn/module.h — the base class of every layer and model: named parameters, conversion,
// state dicts.
//
// A module lists its parameters and sub-modules in one virtual function, `visit`:
//
//   void Linear::visit(ParamVisitor& v) {
//     v.parameter("weight", weight);                         // a Tensor member, by reference
//     if (bias.defined()) v.parameter("bias", bias, {.weight_decay = false});
//   }
//   void MambaBlock::visit(ParamVisitor& v) { v.module("norm", norm); v.module("mixer", mixer); }
//
// Everything else (dotted names such as "backbone.layers.3.mixer.in_proj.weight", counting,
// conversion, zero_grad, state dicts) walks that list. Nothing stores a pointer to a member,
// so modules are safely movable (a loader can return a MambaLM by value) and the parameters
// stay plain `Tensor` members that forward code reads directly (`linear(x, weight)`).
//
// Parameters are leaf tensors with requires_grad. The optimizer holds the same handles, so
// convert (to(DType), to(Device)) BEFORE creating an optimizer: conversion makes new tensors.
// load_state_dict, in contrast, copies values into the existing tensors (on their device) and
// keeps every handle valid.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace mg::nn {

// The role of a parameter, read by the optimizer (weight decay) and the initialiser
// (custom_init: the generic init must not overwrite it; see nn/init.h).
struct ParamInfo {
  bool weight_decay = true;
  bool custom_init = false;
};

struct NamedParam {
  std::string name;
  Tensor tensor;
  ParamInfo info;
};

// What a module's visit() talks to. `parameter` hands over a reference to the member so that
// conversions and set_parameter can replace it; `module` recurses with a dotted prefix.
class ParamVisitor {
 public:
  virtual ~ParamVisitor() = default;
  virtual void parameter(const std::string& name, Tensor& t, ParamInfo info = {}) = 0;
  void module(const std::string& name, class Module& m);

 protected:
  std::string prefix_;
};

class Module {
 public:
  virtual ~Module() = default;

  // Lists this module's own parameters and children, in a fixed order.
  virtual void visit(ParamVisitor& v) = 0;

  // ---- inspection ---------------------------------------------------------------------
  std::vector<NamedParam> named_parameters() const;  // dotted names, in visit order
  std::vector<Tensor> parameters() const;
  int64_t num_parameters() const;  // total number of elements
  Tensor parameter(const std::string& name) const;  // throws mg::Error naming close names

  // ---- conversion and gradients -----------------------------------------------------------
  // New leaf tensors (requires_grad kept) on `device` / of `dtype` (f32 <-> f64); grads dropped.
  Module& to(Device device);
  Module& to(DType dtype);
  void zero_grad();
  // Replaces the tensor a parameter slot holds (same shape), e.g. to run the model on tensors
  // that gradcheck owns. The new tensor is used as given (not copied, not made a leaf).
  void set_parameter(const std::string& name, const Tensor& t);

  // ---- state dicts ---------------------------------------------------------------------------
  std::map<std::string, Tensor> state_dict() const;  // name -> the parameter tensor (shared)
  // Copies values into the existing parameters, converting dtype (any float) and device.
  // Strict: throws ONE mg::Error listing every missing, unexpected and mis-shaped name (nothing
  // is modified then). With strict = false, missing and unexpected names are ignored (shapes
  // are always checked).
  void load_state_dict(const std::map<std::string, Tensor>& state, bool strict = true);

 protected:
  // Hook for models whose files use other names (aliases, tied copies): maps a loaded state
  // dict onto this module's own names. Default: unchanged.
  virtual std::map<std::string, Tensor> canonical_names(
      const std::map<std::string, Tensor>& state) const {
    return state;
  }

 private:
  // Calls f(full_name, slot, info) for every parameter. visit is non-const (it hands out
  // references); the const inspection functions cast, since they only read.
  void for_each_parameter(
      const std::function<void(const std::string&, Tensor&, const ParamInfo&)>& f) const;
};

}  // namespace mg::nn
