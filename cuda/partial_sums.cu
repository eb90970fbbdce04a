// cuda/partial_sums.cu — the fixed-order partial-sum kernel; the contract is in
// cuda/partial_sums.h.
#include "cuda/partial_sums.h"

#include "cuda/check.cuh"

namespace mg::cuda {

namespace {

// One thread per output (g, j) of groups x n: s = 0, then s += part[g, k, j] for k in order.
template <typename Acc, typename Out>
__global__ void sum_partials_kernel(const Acc* __restrict__ part, Out* __restrict__ out,
                                    PartialsLayout l, bool accumulate) {
  const int64_t total = l.groups * l.n;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t g = i / l.n, j = i - g * l.n;
    const Acc* p = part + g * l.part_group + j * l.part_elem;
    Acc s = 0;
    for (int64_t k = 0; k < l.parts; ++k) s += p[k * l.part_stride];
    Out* o = out + g * l.out_group + j * l.out_elem;
    *o = accumulate ? (Out)(*o + s) : (Out)s;
  }
}

}  // namespace

template <typename Acc, typename Out>
void sum_partials(const Acc* part, Out* out, const PartialsLayout& layout, bool accumulate,
                  const char* op) {
  const int64_t total = layout.groups * layout.n;
  if (total <= 0) return;
  Launch1d l = launch_1d(total);
  sum_partials_kernel<Acc, Out><<<l.grid, l.block, 0, cuda_stream()>>>(part, out, layout,
                                                                       accumulate);
  check_launch(op);
}

template void sum_partials<double, float>(const double*, float*, const PartialsLayout&, bool,
                                          const char*);
template void sum_partials<double, double>(const double*, double*, const PartialsLayout&, bool,
                                           const char*);
template void sum_partials<float, float>(const float*, float*, const PartialsLayout&, bool,
                                         const char*);

}  // namespace mg::cuda
