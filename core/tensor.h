// core/tensor.h — the n-dimensional array every other piece is built on.
//
// A Tensor is a cheap handle (a shared pointer) to a TensorImpl: a shape, a dtype, and a
// shared Storage. Tensors are always contiguous and row-major, in PyTorch dimension order,
// e.g. (B, L, D). `reshape` returns a view that shares storage; every other op copies.
//
// Autograd fields live here too (requires_grad, grad), but the tape that fills them is in
// autograd/tape.h. A tensor never points at the op that made it, so destroying a long chain
// of tensors never recurses.
//
// Nothing in core records on the tape: Tensor's methods are data operations (view, cast,
// copy_to, clone, detach), and every differentiable function is a free function in ops/
// (reshape, to, add, ...). So x.view(s) is a view that gradients do not flow through;
// reshape(x, s) (ops/shape.h) is the same view, recorded.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/storage.h"

namespace mg {

using Shape = std::vector<int64_t>;

std::string shape_str(const Shape& s);  // "(2, 3, 4)"
int64_t shape_numel(const Shape& s);

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  DType dtype = DType::f32;
  bool requires_grad = false;
  bool is_leaf = true;       // false once an op recorded on the tape produced it
  bool retain_grad = false;  // keep .grad of a non-leaf after backward (for inspection)
  std::shared_ptr<TensorImpl> grad;
  std::string name;  // optional, shown when the tape is printed
};

class Tensor {
 public:
  Tensor() = default;  // an undefined tensor (like None)
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- factories ---------------------------------------------------------------------
  static Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor ones(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor full(const Shape& shape, double value, DType dtype = DType::f32,
                     Device device = Device::cpu());
  static Tensor scalar(double value, DType dtype = DType::f32) { return full({}, value, dtype); }
  // [start, end) with step 1, as f32, f64 or i32.
  static Tensor arange(int64_t start, int64_t end, DType dtype = DType::f32);
  template <typename T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape);
  // Random: uniform [0, 1), N(0, 1), uniform [lo, hi). Same seed, same numbers everywhere.
  static Tensor rand(const Shape& shape, DType dtype = DType::f32, Generator* gen = nullptr);
  static Tensor randn(const Shape& shape, DType dtype = DType::f32, Generator* gen = nullptr);
  static Tensor uniform(const Shape& shape, double lo, double hi, DType dtype = DType::f32,
                        Generator* gen = nullptr);

  // ---- metadata ------------------------------------------------------------------------
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl().shape; }
  int64_t dim() const { return (int64_t)impl().shape.size(); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t numel() const { return shape_numel(impl().shape); }
  DType dtype() const { return impl().dtype; }
  Device device() const { return impl().storage->device; }
  size_t nbytes() const { return (size_t)numel() * dtype_size(dtype()); }

  // Raw element pointer (a device pointer for CUDA tensors). Checks the dtype.
  template <typename T> T* data() const {
    MG_CHECK(dtype() == dtype_of<T>(), "Tensor::data: tensor is ", dtype_name(dtype()),
             ", asked for ", dtype_name(dtype_of<T>()));
    return static_cast<T*>(impl().storage->data);
  }
  // The same, or nullptr for an undefined tensor: how ops hand optional inputs to kernels.
  template <typename T> T* data_or_null() const { return defined() ? data<T>() : nullptr; }
  void* raw_data() const { return impl().storage->data; }

  // ---- conversions (none is recorded on the tape; ops/ has the differentiable forms) -----
  Tensor view(const Shape& shape) const;  // the same storage seen with another shape; one dim
                                          // may be -1 (reshape(x, shape) records it)
  Tensor cast(DType dtype) const;         // a converted copy on the same device (to(x, dtype)
                                          // records it); to bf16 rounds to nearest even
  Tensor copy_to(Device device) const;    // a copy on `device` (to(x, device) records it)
  Tensor clone() const;                   // a deep copy on the same device
  // This tensor's values become src's (same number of elements; src on any device, any
  // floating dtype: converted on the host), in this tensor's own storage, so every handle to
  // it stays valid (loading weights and optimizer state). Not recorded on the tape.
  void copy_values_from(const Tensor& src) const;
  double item() const;                       // the value of a one-element tensor
  template <typename T> std::vector<T> to_vector() const;  // copies to the host
  std::string str(int64_t max_per_dim = 6) const;

  // ---- autograd -------------------------------------------------------------------------
  bool requires_grad() const { return impl().requires_grad; }
  Tensor& requires_grad_(bool on = true);  // only on leaves
  bool is_leaf() const { return impl().is_leaf; }
  Tensor grad() const { return Tensor(impl().grad); }  // undefined until a backward reaches it
  void set_grad(const Tensor& g) { impl().grad = g.impl_; }
  void zero_grad() { impl().grad.reset(); }  // frees the gradient (PyTorch's set_to_none)
  Tensor& retain_grad() { impl().retain_grad = true; return *this; }
  Tensor detach() const;  // shares storage, cut from the tape
  const std::string& name() const { return impl().name; }
  Tensor& set_name(const std::string& n) { impl().name = n; return *this; }

  TensorImpl& impl() const {
    MG_CHECK(impl_ != nullptr, "Tensor: use of an undefined tensor");
    return *impl_;
  }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool same(const Tensor& o) const { return impl_ == o.impl_; }

 private:
  std::shared_ptr<TensorImpl> impl_;
};

std::ostream& operator<<(std::ostream& os, const Tensor& t);

// Shared shape/dtype/device checks used by ops. `op` names the op in the error.
void check_defined(const char* op, const Tensor& t, const char* arg);
void check_float(const char* op, const Tensor& t, const char* arg);
void check_dtype(const char* op, const Tensor& t, DType want, const char* arg);
void check_same_dtype(const char* op, const Tensor& a, const Tensor& b);
void check_same_device(const char* op, const Tensor& a, const Tensor& b);
void check_shape(const char* op, const Tensor& t, const Shape& want, const char* arg);
void check_dim(const char* op, const Tensor& t, int64_t ndim, const char* arg);
// Until the CUDA backend exists for an op, it calls this to reject device tensors clearly.
void check_cpu(const char* op, const Tensor& t);
int64_t normalize_dim(const char* op, int64_t d, int64_t ndim);

// ---- template definitions ---------------------------------------------------------------
template <typename T>
Tensor Tensor::from_vector(const std::vector<T>& values, const Shape& shape) {
  MG_CHECK((int64_t)values.size() == shape_numel(shape), "Tensor::from_vector: ", values.size(),
           " values do not fill shape ", shape_str(shape));
  Tensor t = empty(shape, dtype_of<T>());
  std::copy(values.begin(), values.end(), t.data<T>());
  return t;
}

template <typename T>
std::vector<T> Tensor::to_vector() const {
  Tensor host = device().is_cpu() ? *this : copy_to(Device::cpu());
  const T* p = host.data<T>();
  return std::vector<T>(p, p + numel());
}

}  // namespace mg
