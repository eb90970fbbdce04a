#include "core/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string_view>
#include <vector>

#include "core/json.h"

namespace mg {

static_assert(std::endian::native == std::endian::little,
              "safetensors I/O copies raw little-endian bytes: a big-endian host needs byte swaps");

namespace {

constexpr uint64_t kMaxHeaderBytes = 100u * 1000u * 1000u;  // 100 MB
constexpr int kMaxJsonDepth = 16;
constexpr size_t kHeaderStart = 8;  // the JSON header follows the 8-byte little-endian length

// ---- the header: JSON (core/json.h), restricted to the safetensors subset -----------------

// Errors in the header's JSON read like core/json.h's parse errors, with file offsets.
[[noreturn]] void json_error(const std::string& source, uint64_t at, const std::string& what) {
  throw Error(detail::cat(source, ": byte ", at, ": ", what));
}

// The header may hold only objects, arrays, strings and integers, nested at most kMaxJsonDepth
// deep: no booleans, null or floating-point numbers (core/json.h reads all of JSON). `text` is
// the header; text[0] is file byte kHeaderStart, the base of every offset().
void check_subset(const json::Value& v, int depth, std::string_view text, const std::string& source) {
  if (depth > kMaxJsonDepth)
    json_error(source, v.offset(), "nesting deeper than " + std::to_string(kMaxJsonDepth));
  switch (v.kind()) {
    case json::Kind::null:
    case json::Kind::boolean:
      json_error(source, v.offset(),
                 detail::cat("unsupported JSON value ", json::kind_name(v.kind()),
                             " (only objects, arrays, strings and integers are allowed)"));
    case json::Kind::number:
      if (!v.is_int()) {  // a fraction or an exponent, or an integer beyond int64
        const std::string_view rest = text.substr(v.offset() - kHeaderStart);
        const std::string_view literal = rest.substr(0, rest.find_first_not_of("+-0123456789.eE"));
        json_error(source, v.offset(),
                   literal.find_first_of(".eE") != std::string_view::npos
                       ? "floating-point numbers are not supported in a safetensors header"
                       : "integer out of range");
      }
      return;
    case json::Kind::string: return;
    case json::Kind::array:
      for (const auto& item : v.as_array()) check_subset(item, depth + 1, text, source);
      return;
    case json::Kind::object:
      for (const auto& [key, item] : v.as_object()) check_subset(item, depth + 1, text, source);
      return;
  }
}

// Parses the header (the header_len bytes after the length): one JSON object, then only
// whitespace (the writer's padding), in the subset above.
json::Value parse_header(const std::string& path, std::string_view text) {
  const std::string source = "load_safetensors: " + path + ": malformed JSON header";
  const size_t first = text.find_first_not_of(" \t\n\r");
  if (first == std::string_view::npos || text[first] != '{')
    json_error(source, kHeaderStart + std::min(first, text.size()),
               "the header must be a JSON object");
  size_t end = 0;
  json::Value root = json::parse(text, source, {.base_offset = kHeaderStart, .end = &end});
  if (end != kHeaderStart + text.size())
    json_error(source, end, "unexpected bytes after the header object");
  check_subset(root, 0, text, source);
  return root;
}

// ---- dtypes --------------------------------------------------------------------------------

struct FileDType {
  const char* name;
  size_t size;
  DType loads_as;
};
constexpr FileDType kFileDTypes[] = {{"F32", 4, DType::f32},  {"F64", 8, DType::f64},
                                     {"I32", 4, DType::i32},  {"I64", 8, DType::i32},
                                     {"BF16", 2, DType::bf16}, {"F16", 2, DType::f32}};

const char* file_dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "F32";
    case DType::f64: return "F64";
    case DType::i32: return "I32";
    case DType::bf16: return "BF16";
  }
  return "?";
}

// ---- the mapped file -----------------------------------------------------------------------

struct MappedFile {
  int fd = -1;
  void* addr = MAP_FAILED;
  size_t size = 0;
  ~MappedFile() {
    if (addr != MAP_FAILED) munmap(addr, size);
    if (fd >= 0) close(fd);
  }
  const unsigned char* bytes() const { return static_cast<const unsigned char*>(addr); }
};

struct Entry {
  std::string name;
  const FileDType* dtype = nullptr;
  Shape shape;
  uint64_t begin = 0, end = 0;
  uint64_t offset = 0;  // where its header entry starts, for messages
};

template <typename... Args>
[[noreturn]] void file_error(const std::string& path, uint64_t at, const Args&... what) {
  throw Error(detail::cat("load_safetensors: ", path, ": ", what..., " (at byte ", at, ")"));
}

}  // namespace

float bf16_to_f32(uint16_t bits) { return std::bit_cast<float>(uint32_t(bits) << 16); }

float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exponent = (h >> 10) & 0x1F;
  uint32_t mantissa = h & 0x3FF;
  uint32_t bits;
  if (exponent == 0x1F) {  // inf or nan (payload kept)
    bits = sign | 0x7F800000u | (mantissa << 13);
  } else if (exponent != 0) {  // normal: rebias 15 -> 127
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {  // +-0
    bits = sign;
  } else {  // subnormal: mantissa * 2^-24, normal in f32 — shift until the hidden bit appears
    int e = -1;
    do { mantissa <<= 1; ++e; } while ((mantissa & 0x400) == 0);
    bits = sign | (uint32_t(112 - e) << 23) | ((mantissa & 0x3FF) << 13);
  }
  return std::bit_cast<float>(bits);
}

// Validates the whole header; copies the tensors only when `with_tensors`.
static SafetensorsFile load(const std::string& path, bool with_tensors) {
  auto fail = [&](uint64_t at, const auto&... what) { file_error(path, at, what...); };
  MappedFile f;
  f.fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  MG_CHECK(f.fd >= 0, "load_safetensors: cannot open ", path, ": ", std::strerror(errno));
  struct stat st {};
  MG_CHECK(fstat(f.fd, &st) == 0, "load_safetensors: cannot stat ", path, ": ", std::strerror(errno));
  MG_CHECK(S_ISREG(st.st_mode), "load_safetensors: ", path, " is not a regular file");
  f.size = (size_t)st.st_size;
  if (f.size < 8) fail(0, "the file is ", f.size, " bytes, too short for the 8-byte header length");
  f.addr = mmap(nullptr, f.size, PROT_READ, MAP_PRIVATE, f.fd, 0);
  MG_CHECK(f.addr != MAP_FAILED, "load_safetensors: cannot map ", path, ": ", std::strerror(errno));

  uint64_t header_len;
  std::memcpy(&header_len, f.bytes(), 8);
  if (header_len > kMaxHeaderBytes)
    fail(0, "header length ", header_len, " exceeds the 100 MB limit");
  if (header_len > f.size - 8)
    fail(0, "header length ", header_len, " runs past the end of the file (", f.size, " bytes)");
  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = f.size - data_start;

  const json::Value root =
      parse_header(path, std::string_view(reinterpret_cast<const char*>(f.bytes()) + 8, header_len));

  // After check_subset every number is an integer (as_int() cannot fail) and nothing is a
  // boolean or null.
  SafetensorsFile out;
  std::vector<Entry> entries;
  for (const auto& [name, value] : root.as_object()) {
    if (name == "__metadata__") {
      if (!value.is_object()) fail(value.offset(), "__metadata__ must be an object");
      for (const auto& [k, v] : value.as_object()) {
        if (!v.is_string()) fail(v.offset(), "__metadata__ value of \"", k, "\" must be a string");
        out.metadata[k] = v.as_string();
      }
      continue;
    }
    Entry e;
    e.name = name;
    e.offset = value.offset();
    if (!value.is_object()) fail(value.offset(), "tensor \"", name, "\" must be an object");
    const json::Value *dtype = nullptr, *shape = nullptr, *offsets = nullptr;
    for (const auto& [k, v] : value.as_object()) {
      if (k == "dtype") dtype = &v;
      else if (k == "shape") shape = &v;
      else if (k == "data_offsets") offsets = &v;
      else fail(v.offset(), "tensor \"", name, "\" has an unknown field \"", k, "\"");
    }
    if (!dtype || !shape || !offsets)
      fail(value.offset(), "tensor \"", name, "\" lacks ", !dtype ? "dtype" : !shape ? "shape" : "data_offsets");
    if (!dtype->is_string()) fail(dtype->offset(), "tensor \"", name, "\": dtype must be a string");
    for (const auto& d : kFileDTypes)
      if (dtype->as_string() == d.name) e.dtype = &d;
    if (!e.dtype)
      fail(dtype->offset(), "tensor \"", name, "\": dtype \"", dtype->as_string(),
           "\" is not supported (F32, F64, F16, BF16, I32, I64 are)");
    if (!shape->is_array()) fail(shape->offset(), "tensor \"", name, "\": shape must be an array");
    uint64_t numel = 1;
    for (const auto& d : shape->as_array()) {
      if (!d.is_int() || d.as_int() < 0)
        fail(d.offset(), "tensor \"", name, "\": shape entries must be non-negative integers");
      const int64_t dim = d.as_int();
      if (dim != 0 && numel > (uint64_t)std::numeric_limits<int64_t>::max() / (uint64_t)dim)
        fail(d.offset(), "tensor \"", name, "\": element count overflows");
      numel *= (uint64_t)dim;
      e.shape.push_back(dim);
    }
    const auto non_negative_int = [](const json::Value& v) { return v.is_int() && v.as_int() >= 0; };
    if (!offsets->is_array() || offsets->size() != 2 ||
        !non_negative_int(offsets->as_array()[0]) || !non_negative_int(offsets->as_array()[1]))
      fail(offsets->offset(), "tensor \"", name, "\": data_offsets must be two non-negative integers");
    e.begin = (uint64_t)offsets->as_array()[0].as_int();
    e.end = (uint64_t)offsets->as_array()[1].as_int();
    if (e.begin > e.end) fail(offsets->offset(), "tensor \"", name, "\": data_offsets begin ", e.begin, " > end ", e.end);
    if (e.end > data_size)
      fail(offsets->offset(), "tensor \"", name, "\": data_offsets end ", e.end,
           " is past the data section (", data_size, " bytes starting at byte ", data_start, ")");
    if (numel > (e.end - e.begin) / e.dtype->size || numel * e.dtype->size != e.end - e.begin)
      fail(offsets->offset(), "tensor \"", name, "\": ", e.end - e.begin, " data bytes but shape ",
           shape_str(e.shape), " of ", e.dtype->name, " needs ", numel, " x ", e.dtype->size);
    entries.push_back(std::move(e));
  }

  // No two tensors may share bytes (empty tensors share nothing).
  std::vector<const Entry*> by_begin;
  for (const auto& e : entries)
    if (e.end > e.begin) by_begin.push_back(&e);
  std::sort(by_begin.begin(), by_begin.end(), [](auto* a, auto* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_begin.size(); ++i)
    if (by_begin[i]->begin < by_begin[i - 1]->end)
      fail(data_start + by_begin[i]->begin, "tensors \"", by_begin[i - 1]->name, "\" [",
           by_begin[i - 1]->begin, ", ", by_begin[i - 1]->end, ") and \"", by_begin[i]->name,
           "\" [", by_begin[i]->begin, ", ", by_begin[i]->end, ") overlap");

  // The header is valid: copy (and widen) every tensor.
  if (!with_tensors) return out;
  for (const auto& e : entries) {
    const unsigned char* src = f.bytes() + data_start + e.begin;
    Tensor t = Tensor::empty(e.shape, e.dtype->loads_as);
    int64_t n = t.numel();
    std::string dt = e.dtype->name;
    if (dt == "F32" || dt == "F64" || dt == "I32" || dt == "BF16") {  // kept bit for bit
      if (n > 0) std::memcpy(t.raw_data(), src, t.nbytes());
    } else if (dt == "I64") {
      int32_t* dst = t.data<int32_t>();
      for (int64_t i = 0; i < n; ++i) {
        int64_t v;
        std::memcpy(&v, src + 8 * i, 8);
        if (v < std::numeric_limits<int32_t>::min() || v > std::numeric_limits<int32_t>::max())
          fail(data_start + e.begin + 8 * (uint64_t)i, "tensor \"", e.name, "\": I64 element ", i,
               " = ", v, " does not fit in i32");
        dst[i] = (int32_t)v;
      }
    } else {
      float* dst = t.data<float>();
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = f16_to_f32(h);
      }
    }
    out.tensors[e.name] = std::move(t);
  }
  return out;
}

SafetensorsFile load_safetensors(const std::string& path) { return load(path, true); }

std::map<std::string, std::string> load_safetensors_metadata(const std::string& path) {
  return load(path, false).metadata;
}

// ---- writing -------------------------------------------------------------------------------

static void append_json_string(std::string& out, const std::string& s) {
  out += '"';
  for (unsigned char c : s) {
    if (c == '"') out += "\\\"";
    else if (c == '\\') out += "\\\\";
    else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else out += (char)c;
  }
  out += '"';
}

void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  // Validate and lay out everything before touching the disk.
  std::string header = "{";
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [k, v] : metadata) {
      if (!first) header += ',';
      first = false;
      append_json_string(header, k);
      header += ':';
      append_json_string(header, v);
    }
    header += '}';
  }
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    MG_CHECK(name != "__metadata__", "save_safetensors: ", path, ": \"__metadata__\" is reserved, not a tensor name");
    MG_CHECK(t.defined(), "save_safetensors: ", path, ": tensor \"", name, "\" is undefined");
    if (header.size() > 1) header += ',';
    append_json_string(header, name);
    header += ":{\"dtype\":\"";
    header += file_dtype_name(t.dtype());
    header += "\",\"shape\":[";
    for (size_t i = 0; i < t.shape().size(); ++i) {
      if (i) header += ',';
      header += std::to_string(t.shape()[i]);
    }
    header += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + t.nbytes()) + "]}";
    offset += t.nbytes();
  }
  header += '}';
  while (header.size() % 8 != 0) header += ' ';  // keeps the data section 8-byte aligned
  MG_CHECK(header.size() <= kMaxHeaderBytes, "save_safetensors: ", path, ": header of ",
           header.size(), " bytes exceeds the 100 MB limit");

  const std::string tmp = path + ".tmp." + std::to_string(getpid());
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  MG_CHECK(fd >= 0, "save_safetensors: cannot create temporary file ", tmp, ": ", std::strerror(errno));
  auto abandon = [&](const std::string& what) {
    int err = errno;
    if (fd >= 0) close(fd);
    unlink(tmp.c_str());
    throw Error(detail::cat("save_safetensors: ", path, ": ", what, ": ", std::strerror(err),
                            " (", tmp, " removed; any existing file is unchanged)"));
  };
  uint64_t written = 0;
  auto write_all = [&](const void* data, size_t n) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      ssize_t k = write(fd, p, n);
      if (k < 0 && errno == EINTR) continue;
      if (k <= 0) abandon(detail::cat("write failed at byte ", written));
      p += k;
      n -= (size_t)k;
      written += (uint64_t)k;
    }
  };
  uint64_t header_len = header.size();
  write_all(&header_len, 8);
  write_all(header.data(), header.size());
  for (const auto& [name, t] : tensors) {
    if (t.numel() == 0) continue;
    try {
      Tensor host = t.device().is_cpu() ? t : t.copy_to(Device::cpu());
      write_all(host.raw_data(), host.nbytes());
    } catch (...) {
      if (fd >= 0) { close(fd); fd = -1; unlink(tmp.c_str()); }
      throw;
    }
  }
  if (fsync(fd) != 0) abandon("fsync failed");
  int rc = close(fd);
  fd = -1;
  if (rc != 0) abandon("close failed");
  if (rename(tmp.c_str(), path.c_str()) != 0) abandon("rename to the final name failed");

  // Make the rename itself durable.
  size_t slash = path.find_last_of('/');
  std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  int dfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  MG_CHECK(dfd >= 0, "save_safetensors: ", path, " written, but its directory ", dir,
           " cannot be opened to fsync it: ", std::strerror(errno));
  rc = fsync(dfd);
  close(dfd);
  MG_CHECK(rc == 0, "save_safetensors: ", path, " written, but fsync of ", dir, " failed: ", std::strerror(errno));
}

}  // namespace mg
