#include "core/tensor.h"

#include <cmath>
#include <cstring>
#include <iomanip>
#include <ostream>
#include <sstream>


namespace mg {

std::string shape_str(const Shape& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + ")";
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

// ---- factories ---------------------------------------------------------------------------

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t d : shape)
    MG_CHECK(d >= 0, "Tensor::empty: negative dimension in shape ", shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->dtype = dtype;
  impl->storage = std::make_shared<Storage>((size_t)shape_numel(shape) * dtype_size(dtype), device);
  return Tensor(std::move(impl));
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  allocator_for(device).fill_zero(t.raw_data(), t.nbytes());
  return t;
}

// Fills a host buffer through f(i) then moves it to the device.
template <typename F>
static Tensor fill_with(const Shape& shape, DType dtype, Device device, F&& f) {
  Tensor t = Tensor::empty(shape, dtype);
  int64_t n = t.numel();
  switch (dtype) {
    case DType::f32: { float* p = t.data<float>(); for (int64_t i = 0; i < n; ++i) p[i] = (float)f(i); break; }
    case DType::f64: { double* p = t.data<double>(); for (int64_t i = 0; i < n; ++i) p[i] = f(i); break; }
    case DType::i32: { int32_t* p = t.data<int32_t>(); for (int64_t i = 0; i < n; ++i) p[i] = (int32_t)f(i); break; }
    case DType::bf16: { bf16* p = t.data<bf16>(); for (int64_t i = 0; i < n; ++i) p[i] = bf16((float)f(i)); break; }
  }
  return device.is_cpu() ? t : t.copy_to(device);
}

Tensor Tensor::ones(const Shape& shape, DType dtype, Device device) {
  return full(shape, 1.0, dtype, device);
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  return fill_with(shape, dtype, device, [&](int64_t) { return value; });
}

Tensor Tensor::arange(int64_t start, int64_t end, DType dtype) {
  MG_CHECK(end >= start, "Tensor::arange: end ", end, " < start ", start);
  return fill_with({end - start}, dtype, Device::cpu(), [&](int64_t i) { return (double)(start + i); });
}

Tensor Tensor::rand(const Shape& shape, DType dtype, Generator* gen) {
  return uniform(shape, 0.0, 1.0, dtype, gen);
}

Tensor Tensor::uniform(const Shape& shape, double lo, double hi, DType dtype, Generator* gen) {
  MG_CHECK(is_floating(dtype), "Tensor::uniform: dtype must be f32, f64 or bf16, got ", dtype_name(dtype));
  Generator& g = gen ? *gen : default_generator();
  uint64_t base = g.reserve((uint64_t)shape_numel(shape));
  if (dtype == DType::f32 || dtype == DType::bf16)  // bf16: the f32 draw, rounded
    return fill_with(shape, dtype, Device::cpu(), [&](int64_t i) {
      return (double)((float)lo + (float)(hi - lo) * g.uniform_f32_at(base + i));
    });
  return fill_with(shape, dtype, Device::cpu(),
                   [&](int64_t i) { return lo + (hi - lo) * g.uniform_at(base + i); });
}

Tensor Tensor::randn(const Shape& shape, DType dtype, Generator* gen) {
  MG_CHECK(is_floating(dtype), "Tensor::randn: dtype must be f32, f64 or bf16, got ", dtype_name(dtype));
  Generator& g = gen ? *gen : default_generator();
  uint64_t base = g.reserve((uint64_t)shape_numel(shape));
  return fill_with(shape, dtype, Device::cpu(), [&](int64_t i) { return g.normal_at(base + i); });
}

// ---- metadata ----------------------------------------------------------------------------

int64_t Tensor::size(int64_t d) const { return shape()[normalize_dim("Tensor::size", d, dim())]; }

// ---- conversions -------------------------------------------------------------------------

Tensor Tensor::view(const Shape& new_shape) const {
  Shape s = new_shape;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      MG_CHECK(infer < 0, "reshape: more than one -1 in ", shape_str(new_shape));
      infer = (int64_t)i;
    } else {
      MG_CHECK(s[i] >= 0, "reshape: invalid dimension in ", shape_str(new_shape));
      known *= s[i];
    }
  }
  if (infer >= 0) {
    MG_CHECK(known > 0 && numel() % known == 0, "reshape: cannot reshape ", shape_str(shape()),
             " to ", shape_str(new_shape));
    s[infer] = numel() / known;
  }
  MG_CHECK(shape_numel(s) == numel(), "reshape: cannot reshape ", shape_str(shape()), " (",
           numel(), " elements) to ", shape_str(new_shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = this->impl().storage;  // a view: same bytes, new shape
  impl->shape = s;
  impl->dtype = dtype();
  return Tensor(std::move(impl));
}

Tensor Tensor::cast(DType target) const {
  if (target == dtype()) return *this;
  Tensor y = empty(shape(), target, device());
  allocator_for(device()).convert(y.raw_data(), target, raw_data(), dtype(), numel());
  return y;
}

Tensor Tensor::copy_to(Device target) const {
  if (target == device()) return *this;
  Tensor y = empty(shape(), dtype(), target);
  if (device().is_cpu())
    allocator_for(target).copy_from_host(y.raw_data(), raw_data(), nbytes());
  else if (target.is_cpu())
    allocator_for(device()).copy_to_host(y.raw_data(), raw_data(), nbytes());
  else
    throw Error(detail::cat("copy_to: copies between ", device().str(), " and ", target.str(),
                            " go through the CPU"));
  return y;
}

Tensor Tensor::clone() const {
  Tensor y = empty(shape(), dtype(), device());
  allocator_for(device()).copy_on_device(y.raw_data(), raw_data(), nbytes());
  return y;
}

void Tensor::copy_values_from(const Tensor& src_any) const {
  MG_CHECK(src_any.numel() == numel(), "copy_values_from: source of shape ",
           shape_str(src_any.shape()), " into a tensor of shape ", shape_str(shape()));
  Tensor src = src_any.copy_to(Device::cpu()).cast(dtype());  // cast is a CPU routine
  allocator_for(device()).copy_from_host(raw_data(), src.raw_data(), nbytes());
}

double Tensor::item() const {
  MG_CHECK(numel() == 1, "item: tensor of shape ", shape_str(shape()), " has ", numel(),
           " elements, expected 1");
  Tensor h = device().is_cpu() ? *this : copy_to(Device::cpu());
  switch (dtype()) {
    case DType::f32: return h.data<float>()[0];
    case DType::f64: return h.data<double>()[0];
    case DType::i32: return h.data<int32_t>()[0];
    case DType::bf16: return (float)h.data<bf16>()[0];
  }
  return 0;
}

Tensor& Tensor::requires_grad_(bool on) {
  MG_CHECK(is_leaf(), "requires_grad_: only leaf tensors (not produced by a recorded op) can "
                      "change requires_grad; use detach() first");
  MG_CHECK(!on || is_floating(dtype()), "requires_grad_: ", dtype_name(dtype()),
           " tensors cannot require grad");
  impl().requires_grad = on;
  return *this;
}

Tensor Tensor::detach() const {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = this->impl().storage;
  impl->shape = shape();
  impl->dtype = dtype();
  return Tensor(std::move(impl));
}

// ---- printing ----------------------------------------------------------------------------

static void print_rec(std::ostream& os, const Tensor& h, int64_t dim, int64_t offset,
                      int64_t max_per_dim, int indent) {
  const Shape& s = h.shape();
  int64_t n = s[dim];
  int64_t stride = 1;
  for (size_t k = dim + 1; k < s.size(); ++k) stride *= s[k];
  auto value = [&](int64_t i) -> double {
    switch (h.dtype()) {
      case DType::f32: return h.data<float>()[i];
      case DType::f64: return h.data<double>()[i];
      case DType::i32: return h.data<int32_t>()[i];
      case DType::bf16: return (float)h.data<bf16>()[i];
    }
    return 0;
  };
  os << "[";
  bool last = dim + 1 == (int64_t)s.size();
  for (int64_t i = 0; i < n; ++i) {
    if (n > max_per_dim && i == max_per_dim / 2) {
      os << (last ? "..., " : "...,\n" + std::string(indent + 1, ' '));
      i = n - max_per_dim / 2;
    }
    if (last) {
      if (h.dtype() == DType::i32) os << (int64_t)value(offset + i);
      else os << std::setw(10) << std::setprecision(4) << value(offset + i);
    } else {
      print_rec(os, h, dim + 1, offset + i * stride, max_per_dim, indent + 1);
    }
    if (i + 1 < n) os << (last ? ", " : ",\n" + std::string(indent + 1, ' '));
  }
  os << "]";
}

std::string Tensor::str(int64_t max_per_dim) const {
  if (!defined()) return "tensor(undefined)";
  std::ostringstream os;
  Tensor h = device().is_cpu() ? *this : copy_to(Device::cpu());
  os << "tensor(";
  if (dim() == 0) os << item();
  else print_rec(os, h, 0, 0, max_per_dim, 7);
  os << ", shape=" << shape_str(shape()) << ", dtype=" << dtype_name(dtype());
  if (!device().is_cpu()) os << ", device=" << device().str();
  if (requires_grad()) os << ", requires_grad";
  os << ")";
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << t.str(); }

// ---- checks ------------------------------------------------------------------------------

void check_defined(const char* op, const Tensor& t, const char* arg) {
  MG_CHECK(t.defined(), op, ": argument '", arg, "' is an undefined tensor");
}
void check_float(const char* op, const Tensor& t, const char* arg) {
  check_defined(op, t, arg);
  MG_CHECK(is_floating(t.dtype()), op, ": argument '", arg, "' must be f32 or f64 (or bf16), got ",
           dtype_name(t.dtype()), " of shape ", shape_str(t.shape()));
}
void check_dtype(const char* op, const Tensor& t, DType want, const char* arg) {
  check_defined(op, t, arg);
  MG_CHECK(t.dtype() == want, op, ": argument '", arg, "' must be ", dtype_name(want), ", got ",
           dtype_name(t.dtype()));
}
void check_same_dtype(const char* op, const Tensor& a, const Tensor& b) {
  MG_CHECK(a.dtype() == b.dtype(), op, ": dtype mismatch, ", dtype_name(a.dtype()), " ",
           shape_str(a.shape()), " vs ", dtype_name(b.dtype()), " ", shape_str(b.shape()));
}
void check_same_device(const char* op, const Tensor& a, const Tensor& b) {
  MG_CHECK(a.device() == b.device(), op, ": device mismatch, ", a.device().str(), " vs ",
           b.device().str());
}
void check_shape(const char* op, const Tensor& t, const Shape& want, const char* arg) {
  check_defined(op, t, arg);
  MG_CHECK(t.shape() == want, op, ": argument '", arg, "' must have shape ", shape_str(want),
           ", got ", shape_str(t.shape()));
}
void check_dim(const char* op, const Tensor& t, int64_t ndim, const char* arg) {
  check_defined(op, t, arg);
  MG_CHECK(t.dim() == ndim, op, ": argument '", arg, "' must have ", ndim, " dimensions, got ",
           shape_str(t.shape()));
}
void check_cpu(const char* op, const Tensor& t) {
  MG_CHECK(t.device().is_cpu(), op, ": no ", t.device().str(),
           " kernel yet (the CUDA backend does not implement this op); move the tensor to cpu");
}
int64_t normalize_dim(const char* op, int64_t d, int64_t ndim) {
  int64_t r = d < 0 ? d + ndim : d;
  MG_CHECK(r >= 0 && r < ndim, op, ": dimension ", d, " out of range for a tensor with ", ndim,
           " dimensions");
  return r;
}

}  // namespace mg
