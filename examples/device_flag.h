// examples/device_flag.h — the programs' `--device cpu|cuda` flag.
//
// open_device parses the value and, for CUDA, initialises the backend at once, so that a build
// without CUDA, or a machine without a visible GPU, is one clear error at start (naming the
// flag and the reason) instead of a failure in the middle of a run. It returns the device and
// a one-line description of the GPU ("" for the CPU) for the program's log.
#pragma once
#include <string>
#include <utility>

#include "core/allocator.h"
#include "core/device.h"
#include "core/error.h"
#include "train/distributed.h"
#ifdef MG_WITH_CUDA
#include "cuda/runtime.h"
#endif

namespace mg::examples {

inline std::pair<mg::Device, std::string> open_device(const std::string& value) {
  mg::Device dev;
  try {
    dev = mg::parse_device(value);
    if (!dev.is_cuda()) return {dev, ""};
    mg::dist::select_local_gpu();  // under mpirun: one GPU per rank, from the local rank
    mg::allocator_for(dev);  // registers and initialises the CUDA backend, or throws why not
  } catch (const mg::Error& e) {
    throw mg::Error(mg::detail::cat("--device ", value, ": ", e.what()));
  }
#ifdef MG_WITH_CUDA
  return {dev, mg::cuda::describe()};
#else
  return {dev, ""};  // unreachable: allocator_for(cuda) throws in a build without CUDA
#endif
}

}  // namespace mg::examples
