// ops/norm_rows.h — the row machinery shared by the CPU norm kernels (ops/norm.cpp,
// ops/add_norm.cpp): a deterministic row sum in double, and the fixed row blocks whose
// partial weight gradients are added in block order. Internal to ops/ (not an API).
//
// Determinism: the blocks are a function of `rows` only (nb = min(ceil(rows/32), 128)),
// never of the thread count, and the partials are added in block order, so every result is
// bitwise identical for any thread count.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/parallel.h"

namespace mg::cpu {

// sum_{j<D} f(j) in double, with 8 independent partial sums combined in a fixed order: the
// same result on every run, and no loop-carried dependency on a single add.
template <typename F>
inline double row_sum(int64_t D, F&& f) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= D; j += 8)
    for (int u = 0; u < 8; ++u) acc[u] += f(j + u);
  for (; j < D; ++j) acc[0] += f(j);
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// The fixed row blocks of the backward's dw/db reduction: a function of `rows` only.
struct RowBlocks {
  int64_t count = 0, size = 0;
  explicit RowBlocks(int64_t rows) {
    if (rows <= 0) return;
    count = std::min<int64_t>((rows + 31) / 32, 128);
    size = (rows + count - 1) / count;
    count = (rows + size - 1) / size;  // drop blocks that would be empty
  }
};

// Runs row_fn(row, pw, pb) for every row, where pw / pb are the row's block's partial sums
// (D doubles each, or null when dw / db is null), then writes dw = sum of the partials in
// block order (and db likewise).
template <typename T, typename RowFn>
void rows_then_reduce(int64_t rows, int64_t D, T* dw, T* db, RowFn&& row_fn) {
  RowBlocks blocks(rows);
  std::vector<double> pw(dw ? (size_t)(blocks.count * D) : 0, 0.0);
  std::vector<double> pb(db ? (size_t)(blocks.count * D) : 0, 0.0);
  int64_t grain = std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, blocks.size * D));
  parallel_for(blocks.count, grain, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      double* w_part = dw ? pw.data() + k * D : nullptr;
      double* b_part = db ? pb.data() + k * D : nullptr;
      int64_t r1 = std::min(rows, (k + 1) * blocks.size);
      for (int64_t row = k * blocks.size; row < r1; ++row) row_fn(row, w_part, b_part);
    }
  });
  auto reduce = [&](const std::vector<double>& part, T* out) {
    if (!out) return;
    parallel_for(D, kElementwiseGrain, [&](int64_t j0, int64_t j1) {
      for (int64_t j = j0; j < j1; ++j) {
        double s = 0;
        for (int64_t k = 0; k < blocks.count; ++k) s += part[k * D + j];
        out[j] = (T)s;
      }
    });
  };
  reduce(pw, dw);
  reduce(pb, db);
}

}  // namespace mg::cpu
