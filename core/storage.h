// core/storage.h — a block of device memory shared by a tensor and its views.
#pragma once
#include <cstddef>
#include <memory>

#include "core/allocator.h"

namespace mg {

struct Storage {
  void* data = nullptr;
  size_t nbytes = 0;
  Device device;

  Storage(size_t n, Device d) : nbytes(n), device(d) { data = allocator_for(d).allocate(n); }
  ~Storage() { allocator_for(device).deallocate(data, nbytes); }
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
};

}  // namespace mg
