// cuda/partial_sums.h — the one kernel (with its launcher) that adds per-block partial sums in
// a fixed order: the second pass of every deterministic reduction in the CUDA backend.
//
// A reduction with no float atomics runs in two passes. Pass 1 (the op's own kernel) writes
// one partial sum per (output, block of inputs), each summed in a fixed order. Pass 2, this
// kernel, adds each output's partials in block order k = 0, 1, ..., parts - 1, starting at 0:
//
//   out[g, j] (=, or += with accumulate) sum_{k < parts} part[g, k, j]
//
// for groups g < groups and elements j < n, with the strides of PartialsLayout:
//
//   part[g, k, j] = part[g * part_group + k * part_stride + j * part_elem]
//   out[g, j]     = out[g * out_group + j * out_elem]
//
// Acc is the type the partials are stored and added in (double for the norms, conv1d, linear's
// bias and the gradient norm; float for the selective scan's parameter sums), Out the output
// type. One thread per output: the additions happen in one fixed order, so results are
// bitwise reproducible run to run. Enqueued on the stream, no host sync.
//
// Examples:
//   column sums of a (parts, n) row-major matrix:  PartialsLayout::rows(parts, n)
//   dw[c, k] of conv1d from part[(k * chunks + chunk) * C + c]:
//     {.groups = K, .n = C, .parts = chunks, .part_group = chunks * C, .part_stride = C,
//      .out_group = 1, .out_elem = K}
#pragma once
#include <cstdint>

namespace mg::cuda {

struct PartialsLayout {
  int64_t groups = 1, n = 0, parts = 0;
  int64_t part_group = 0, part_stride = 0, part_elem = 1;
  int64_t out_group = 0, out_elem = 1;

  // part (parts, n) row-major, out (n): out[j] = sum_k part[k * n + j].
  static PartialsLayout rows(int64_t parts, int64_t n) {
    PartialsLayout l;
    l.n = n;
    l.parts = parts;
    l.part_stride = n;
    return l;
  }
};

// Instantiated for (Acc, Out) = (double, float), (double, double) and (float, float). `op`
// names the caller in a launch error.
template <typename Acc, typename Out>
void sum_partials(const Acc* part, Out* out, const PartialsLayout& layout, bool accumulate,
                  const char* op);

}  // namespace mg::cuda
