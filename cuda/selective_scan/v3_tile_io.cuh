// cuda/selective_scan/v3_tile_io.cuh — bwd_tile's shared-memory tiles (cuda/selective_scan/
// v3_tile.cu): a lane's 8 steps between a tile row and registers, and a channel tile between a
// (B, L, ED) tensor and shared memory. Templates on the tensor's element type (float, or bf16:
// widened exactly on load, rounded to nearest even once on store); the tiles are f32.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <type_traits>

#include "cuda/selective_scan/v3.cuh"

namespace mg::cuda::v3 {
namespace {

// Position of tile step tt in a shared-memory row: 4 floats of padding after every 32, so a
// warp's 16-byte reads of its lanes' 8 consecutive steps hit distinct banks.
__device__ __forceinline__ int pos(int tt) { return tt + ((tt >> 5) << 2); }

__device__ __forceinline__ void row_to_regs(const float* row, int lane, float (&r)[kK]) {
  const float4* q = reinterpret_cast<const float4*>(row + pos(lane * kK));
  const float4 x = q[0], y = q[1];
  r[0] = x.x, r[1] = x.y, r[2] = x.z, r[3] = x.w, r[4] = y.x, r[5] = y.y, r[6] = y.z, r[7] = y.w;
}
__device__ __forceinline__ void regs_to_row(float* row, int lane, const float (&r)[kK]) {
  float4* q = reinterpret_cast<float4*>(row + pos(lane * kK));
  q[0] = make_float4(r[0], r[1], r[2], r[3]);
  q[1] = make_float4(r[4], r[5], r[6], r[7]);
}

// 4 consecutive elements at p (aligned to 4 elements): one 16-byte access in f32, one 8-byte
// access in bf16 (element 0 in the low half of the first word: little-endian).
__device__ __forceinline__ float4 ld4(const float* p) { return *reinterpret_cast<const float4*>(p); }
__device__ __forceinline__ float4 ld4(const bf16* p) {
  const uint2 r = *reinterpret_cast<const uint2*>(p);
  return make_float4(__uint_as_float(r.x << 16), __uint_as_float(r.x & 0xffff0000u),
                     __uint_as_float(r.y << 16), __uint_as_float(r.y & 0xffff0000u));
}
__device__ __forceinline__ void st4(float* p, float4 v) { *reinterpret_cast<float4*>(p) = v; }
__device__ __forceinline__ void st4(bf16* p, float4 v) {
  const __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y), hi = __floats2bfloat162_rn(v.z, v.w);
  uint2 r;
  r.x = *reinterpret_cast<const unsigned*>(&lo);
  r.y = *reinterpret_cast<const unsigned*>(&hi);
  *reinterpret_cast<uint2*>(p) = r;
}

// Steps [t0, t0 + tl) x channels [c0, c0 + kW) of a (B, L, ED) tensor -> s[w * kRow +
// pos(tt)] (0 outside), by the whole block. vec4: 4 channels per access (2 per step).
// Plain loads: du, ddelta, dz are read back after this block wrote them.
template <typename T>
__device__ void load_tile(const T* src, int64_t b, int64_t L, int64_t ED, int64_t t0, int tl,
                          int64_t c0, bool vec4, float* s) {
  if (vec4) {
    for (int k = threadIdx.x; k < 2 * kTile; k += kTileThreads) {
      const int tt = k >> 1, half = k & 1;
      const int64_t c = c0 + 4 * half;
      float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
      if (tt < tl && c < ED) v = ld4(src + (b * L + t0 + tt) * ED + c);
      float* r = s + 4 * half * kRow + pos(tt);
      r[0] = v.x, r[kRow] = v.y, r[2 * kRow] = v.z, r[3 * kRow] = v.w;
    }
  } else {
    for (int k = threadIdx.x; k < kW * kTile; k += kTileThreads) {
      const int tt = k >> 3, w = k & 7;
      const int64_t c = c0 + w;
      s[w * kRow + pos(tt)] = (tt < tl && c < ED) ? ld(src, (b * L + t0 + tt) * ED + c) : 0.f;
    }
  }
}
// The reverse: s -> dst at valid steps and channels only.
template <typename T>
__device__ void store_tile(const float* s, int64_t b, int64_t L, int64_t ED, int64_t t0, int tl,
                           int64_t c0, bool vec4, T* dst) {
  if (vec4) {
    for (int k = threadIdx.x; k < 2 * kTile; k += kTileThreads) {
      const int tt = k >> 1, half = k & 1;
      const int64_t c = c0 + 4 * half;
      if (tt >= tl || c >= ED) continue;
      const float* r = s + 4 * half * kRow + pos(tt);
      st4(dst + (b * L + t0 + tt) * ED + c, make_float4(r[0], r[kRow], r[2 * kRow], r[3 * kRow]));
    }
  } else {
    for (int k = threadIdx.x; k < kW * kTile; k += kTileThreads) {
      const int tt = k >> 3, w = k & 7;
      const int64_t c = c0 + w;
      if (tt < tl && c < ED) {
        const float v = s[w * kRow + pos(tt)];
        st(dst, (b * L + t0 + tt) * ED + c, v);
      }
    }
  }
}

// The bf16 bwd_tile calls the tile copies out of line (load_tile_nl, store_tile_nl): inlined,
// they pushed it past its 128 registers (16 bytes spilled); as calls it spills nothing. The
// f32 bwd_tile keeps load_tile and store_tile, inlined as the compiler chooses (as before).
template <typename T>
__device__ __noinline__ void load_tile_nl(const T* src, int64_t b, int64_t L, int64_t ED,
                                          int64_t t0, int tl, int64_t c0, bool vec4, float* s) {
  load_tile(src, b, L, ED, t0, tl, c0, vec4, s);
}
template <typename T>
__device__ __noinline__ void store_tile_nl(const float* s, int64_t b, int64_t L, int64_t ED,
                                           int64_t t0, int tl, int64_t c0, bool vec4, T* dst) {
  store_tile(s, b, L, ED, t0, tl, c0, vec4, dst);
}
// Act: the kernel's activation type; T: the tensor's (bf16 kernels also copy f32 running sums).
template <typename Act, typename T>
__device__ __forceinline__ void tile_in(const T* src, int64_t b, int64_t L, int64_t ED,
                                        int64_t t0, int tl, int64_t c0, bool vec4, float* s) {
  if constexpr (std::is_same_v<Act, float>)
    load_tile(src, b, L, ED, t0, tl, c0, vec4, s);
  else
    load_tile_nl(src, b, L, ED, t0, tl, c0, vec4, s);
}
template <typename Act, typename T>
__device__ __forceinline__ void tile_out(const float* s, int64_t b, int64_t L, int64_t ED,
                                         int64_t t0, int tl, int64_t c0, bool vec4, T* dst) {
  if constexpr (std::is_same_v<Act, float>)
    store_tile(s, b, L, ED, t0, tl, c0, vec4, dst);
  else
    store_tile_nl(s, b, L, ED, t0, tl, c0, vec4, dst);
}

}  // namespace
}  // namespace mg::cuda::v3
