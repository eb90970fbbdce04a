// core/safetensors.h — read and write the safetensors format (checkpoints, golden fixtures).
//
// File layout (all integers little-endian):
//
//   [0, 8)          u64 N, the byte length of the JSON header
//   [8, 8 + N)      the header: one JSON object
//                     {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]},
//                      ..., "__metadata__": {"key": "value", ...}}
//                   (the writer pads it with spaces to a multiple of 8 bytes)
//   [8 + N, size)   the data section; a tensor's bytes are [8 + N + begin, 8 + N + end)
//
// Loading maps the file read-only and copies each tensor into a fresh CPU Tensor:
//   F32 -> f32, F64 -> f64, I32 -> i32, BF16 -> bf16 (bit for bit), I64 -> i32 (a value
//   outside the i32 range is an error), F16 -> f32 (exact: every f16 value, subnormals, inf
//   and nan included, is representable in f32). Other safetensors dtypes are rejected by name.
// The header is validated completely before any tensor is built: header length (at most
// 100 MB and within the file), well-formed JSON (objects, arrays, strings, integers; floats,
// booleans and null are rejected), no duplicate names, every entry exactly {dtype, shape,
// data_offsets}, begin <= end <= data size, (end - begin) == numel * dtype size, no two
// tensors overlapping. Gaps in the data section are allowed. Every failure throws mg::Error
// naming the file, what was wrong and the file byte offset where it was found.
//
// Saving writes tensors in name order (the map's order), so the same tensors always give the
// same bytes. f32 -> F32, f64 -> F64, i32 -> I32, bf16 -> BF16; CUDA tensors are copied to the host one by
// one. The write is atomic: `<path>.tmp.<pid>` is written, flushed and fsync'ed, renamed over
// `path`, and the directory is fsync'ed; on any error the temporary file is removed and an
// existing file at `path` is left untouched.
#pragma once
#include <map>
#include <string>

#include "core/tensor.h"

namespace mg {

struct SafetensorsFile {
  std::map<std::string, Tensor> tensors;
  std::map<std::string, std::string> metadata;  // the header's "__metadata__"
};

SafetensorsFile load_safetensors(const std::string& path);
// The header's "__metadata__" alone (the header is validated as above; no tensor is read).
std::map<std::string, std::string> load_safetensors_metadata(const std::string& path);

void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// Conversions used by the loader, exposed for tests: exact widening of the 16-bit formats.
float bf16_to_f32(uint16_t bits);
float f16_to_f32(uint16_t bits);

}  // namespace mg
