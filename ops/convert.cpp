#include "ops/convert.h"

#include <string>

#include "autograd/tape.h"
#include "ops/shape.h"

namespace mg {

Tensor to(const Tensor& x, DType dtype) {
  check_defined("to", x, "x");
  if (dtype == x.dtype()) return x;
  Tensor y = x.cast(dtype);
  if (is_floating(x.dtype()) && is_floating(dtype))
    record("to_" + std::string(dtype_name(dtype)), {x}, {y},
           [src = x.dtype()](const std::vector<Tensor>& d) { return std::vector<Tensor>{to(d[0], src)}; });
  return y;
}

Tensor to(const Tensor& x, Device device) {
  check_defined("to", x, "x");
  if (device == x.device()) return x;
  Tensor y = x.copy_to(device);
  record("to_" + device.str(), {x}, {y},
         [src = x.device()](const std::vector<Tensor>& d) { return std::vector<Tensor>{to(d[0], src)}; });
  return y;
}

bool is_bf16(const Tensor& x) { return x.defined() && x.dtype() == DType::bf16; }

Tensor widen_bf16(const Tensor& x) { return is_bf16(x) ? to(x, DType::f32) : x; }

}  // namespace mg
