// cuda/selective_scan/v3.h — the CUDA selective scan v3 (issue #12): its occupancy report (the
// entry points are declared with the other versions in ops/selective_scan/kernels.h). A plain C++ header (no CUDA types), so tests and benchmarks can include it
// under `#ifdef MG_WITH_CUDA`. The design, the bytes model and the predicted times are in
// cuda/selective_scan/v3.cuh and docs/cuda_scan.md ("v3").
//
// Same interface, options, saved set and numerics as v1 and v2: the arguments are ScanArgs /
// ScanGrads (ops/selective_scan/scan_args.h), device pointers, enqueued on mg::cuda::stream();
// the saved set is chunk_states (B, ceil(L/T), ED, N), the state entering each chunk of T
// steps, so v3's backward accepts states saved by any forward (CPU, v1, v2, v3) and vice versa.
#pragma once
#include <string>
#include <vector>

#include "ops/selective_scan/kernels.h"

namespace mg::cuda {

// What cudaOccupancyMaxActiveBlocksPerMultiprocessor gives for each v3 kernel at the block size
// and dynamic shared memory v3 launches it with, on the current device; with the compiler's
// registers, static shared memory and local (spill) bytes from cudaFuncGetAttributes.
struct KernelOccupancy {
  std::string kernel;
  int threads = 0;          // per block
  int registers = 0;        // per thread
  int static_smem = 0;      // bytes per block
  int dynamic_smem = 0;     // bytes per block, as launched
  int local_bytes = 0;      // per thread (spills or stack); 0 expected
  int blocks_per_sm = 0;    // resident blocks per multiprocessor
  int warps_per_sm = 0;     // blocks_per_sm * threads / 32
};
std::vector<KernelOccupancy> scan_v3_occupancy();

}  // namespace mg::cuda
