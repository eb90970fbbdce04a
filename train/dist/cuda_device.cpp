// train/dist/cuda_device.cpp — one GPU per process (compiled in CUDA builds).
//
// The CUDA backend (cuda/runtime.cu) adopts the device that is current when it initialises and
// calls it cuda:0. So the GPU of a rank is chosen by making GPU (local_rank mod visible GPUs)
// current before the first CUDA tensor; every rank's programs keep saying `--device cuda`.
// With CUDA_VISIBLE_DEVICES set per rank by the launcher (one GPU visible), that GPU is used.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/error.h"
#include "train/distributed.h"

namespace mg::dist {

namespace {
std::string g_selected;
}

std::string selected_gpu() { return g_selected; }

std::string select_local_gpu() {
  Communicator& w = world();
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    cudaGetLastError();  // the backend reports "no GPU" itself, with the reason
    return "";
  }
  const int gpu = w.local_rank() % count;
  if (w.local_size() > count && !std::getenv("CUDA_VISIBLE_DEVICES"))
    std::fprintf(stderr, "mambagrad: %s: %d ranks on this machine share %d GPU(s); this rank uses "
                 "GPU %d (NCCL refuses two ranks on one GPU)\n", w.who().c_str(), w.local_size(),
                 count, gpu);
  if (w.local_size() > 1 || gpu != 0)
    MG_CHECK(cudaSetDevice(gpu) == cudaSuccess, "cudaSetDevice(", gpu, ") failed for ", w.who());
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, gpu);
  g_selected = "GPU " + std::to_string(gpu) + " of " + std::to_string(count) + " (" + prop.name + ")";
  return g_selected;
}

}  // namespace mg::dist
