// safetensors I/O: round trips, 16-bit float decoding, header validation, corruption
// (every truncation, byte flips), and atomic writes.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "core/safetensors.h"

using namespace mg;
namespace fs = std::filesystem;

namespace {

// A fresh directory under the system temp dir, removed with everything in it at scope exit.
struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "mg_safetensors_XXXXXX").string();
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~TempDir() { std::error_code ec; fs::remove_all(path, ec); }
  std::string file(const std::string& name) const { return (path / name).string(); }
  size_t count() const { return (size_t)std::distance(fs::directory_iterator(path), fs::directory_iterator()); }
};

std::string read_bytes(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}
void write_bytes(const std::string& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), (std::streamsize)bytes.size());
}
// A file from a header text and raw data, laid out by hand (independent of the writer).
std::string make_file(const std::string& header, const std::string& data) {
  uint64_t n = header.size();
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = (char)((n >> (8 * i)) & 0xFF);
  return out + header + data;
}
template <typename T> std::string raw(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}
std::string tensor_bytes(const Tensor& t) {
  return std::string(static_cast<const char*>(t.raw_data()), t.nbytes());
}
// The message of the mg::Error that loading `bytes` throws ("" when it loads).
std::string load_error(const TempDir& dir, const std::string& bytes) {
  std::string p = dir.file("case.safetensors");
  write_bytes(p, bytes);
  try {
    load_safetensors(p);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("safetensors: round trip of every writable dtype, shapes and metadata") {
  TempDir dir;
  std::map<std::string, Tensor> ts;
  ts["a.f32"] = Tensor::from_vector<float>({1.5f, -2.f, 3.25f, 0.f, -0.f, 1e-38f}, {2, 3});
  ts["b.f64"] = Tensor::from_vector<double>({M_PI, -1e300, 5e-324, 7.0}, {4});
  ts["c.i32"] = Tensor::from_vector<int32_t>({0, -1, 2147483647, -2147483647 - 1, 5, 6}, {3, 1, 2});
  ts["d.scalar"] = Tensor::from_vector<float>({42.f}, {});
  ts["e.empty"] = Tensor::zeros({0, 5});
  ts["weird \"name\"\n\\"] = Tensor::from_vector<float>({9.f}, {1});
  std::map<std::string, std::string> meta = {
      {"config", "{\"d_model\": 64}"}, {"ctrl", std::string("tab\there\x01", 10)}, {"utf8", "\xc3\xa9\xe2\x82\xac"}};
  std::string p = dir.file("rt.safetensors");
  save_safetensors(p, ts, meta);

  SafetensorsFile f = load_safetensors(p);
  CHECK(f.metadata == meta);
  REQUIRE(f.tensors.size() == ts.size());
  for (const auto& [name, t] : ts) {
    INFO("tensor ", name);
    REQUIRE(f.tensors.count(name) == 1);
    const Tensor& u = f.tensors.at(name);
    CHECK(u.dtype() == t.dtype());
    CHECK(u.shape() == t.shape());
    CHECK(tensor_bytes(u) == tensor_bytes(t));  // bit-exact, -0 and subnormals included
  }
  // Deterministic bytes; header padded to 8 so the data section is aligned.
  std::string bytes = read_bytes(p);
  save_safetensors(dir.file("rt2.safetensors"), ts, meta);
  CHECK(read_bytes(dir.file("rt2.safetensors")) == bytes);
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  CHECK(n % 8 == 0);
  CHECK(bytes.size() == 8 + n + (6 + 1 + 1) * 4 + 4 * 8 + 6 * 4);  // f32, f64, i32 data
}

TEST_CASE("safetensors: BF16 and F16 decode to hand-computed f32 values") {
  CHECK(bf16_to_f32(0x3F80) == 1.0f);
  CHECK(bf16_to_f32(0xC000) == -2.0f);
  CHECK(bf16_to_f32(0x3E20) == 0.15625f);
  CHECK(bf16_to_f32(0x0001) == std::ldexp(1.0f, -133));  // smallest bf16 subnormal
  CHECK(bf16_to_f32(0x7F80) == INFINITY);
  CHECK(bf16_to_f32(0xFF80) == -INFINITY);
  CHECK(std::isnan(bf16_to_f32(0x7FC0)));
  CHECK(f16_to_f32(0x3C00) == 1.0f);
  CHECK(f16_to_f32(0xC000) == -2.0f);
  CHECK(f16_to_f32(0x3555) == 0.333251953125f);
  CHECK(f16_to_f32(0x7BFF) == 65504.0f);               // largest normal
  CHECK(f16_to_f32(0x0400) == std::ldexp(1.0f, -14));  // smallest normal
  CHECK(f16_to_f32(0x0001) == std::ldexp(1.0f, -24));  // smallest subnormal
  CHECK(f16_to_f32(0x03FF) == std::ldexp(1023.0f, -24));
  CHECK(f16_to_f32(0x8200) == -std::ldexp(1.0f, -15));
  CHECK(std::signbit(f16_to_f32(0x8000)));
  CHECK(f16_to_f32(0x8000) == 0.0f);
  CHECK(f16_to_f32(0x7C00) == INFINITY);
  CHECK(f16_to_f32(0xFC00) == -INFINITY);
  CHECK(std::isnan(f16_to_f32(0x7E00)));
  // All 65536 halves against the textbook formula (-1)^s 2^(e-15) (1 + m/1024).
  int mismatches = 0;
  for (uint32_t h = 0; h < 65536; ++h) {
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? std::ldexp(m / 1024.0, -14) : std::ldexp(1 + m / 1024.0, e - 15);
    if (s) v = -v;
    float got = f16_to_f32((uint16_t)h);
    bool ok = e == 31 ? (m == 0 ? got == (s ? -INFINITY : INFINITY) : std::isnan(got)) : got == (float)v;
    mismatches += !ok;
  }
  CHECK(mismatches == 0);

  // Through a file: BF16 loads as bf16 (bit for bit), F16 and I64 widened.
  TempDir dir;
  std::string data = raw<uint16_t>({0x3F80, 0xC0A0}) + raw<uint16_t>({0x3C00, 0x0001, 0xBC00}) +
                     raw<int64_t>({-7, 2147483647});
  std::string header =
      R"({"b":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]},)"
      R"("h":{"dtype":"F16","shape":[3],"data_offsets":[4,10]},)"
      R"("i":{"dtype":"I64","shape":[2],"data_offsets":[10,26]}})";
  write_bytes(dir.file("w.safetensors"), make_file(header, data));
  SafetensorsFile f = load_safetensors(dir.file("w.safetensors"));
  CHECK(f.tensors.at("b").dtype() == DType::bf16);
  CHECK(f.tensors.at("b").cast(DType::f32).to_vector<float>() == std::vector<float>{1.0f, -5.0f});
  CHECK(f.tensors.at("h").to_vector<float>() == std::vector<float>{1.0f, std::ldexp(1.0f, -24), -1.0f});
  CHECK(f.tensors.at("i").dtype() == DType::i32);
  CHECK(f.tensors.at("i").to_vector<int32_t>() == std::vector<int32_t>{-7, 2147483647});
}

TEST_CASE("safetensors: every malformed header is an mg::Error naming the file and the problem") {
  TempDir dir;
  const std::string f32x2 = raw<float>({1.f, 2.f});
  auto entry = [](const std::string& name, const std::string& body) {
    return "\"" + name + "\":{" + body + "}";
  };
  const std::string good = entry("x", R"("dtype":"F32","shape":[2],"data_offsets":[0,8])");
  struct Bad { const char* what; std::string bytes; const char* expect; };
  std::string huge(8, '\0');
  huge[4] = 1;  // 2^32 bytes
  std::vector<Bad> cases = {
      {"shorter than 8 bytes", "abc", "too short"},
      {"header past the end", make_file("{}", "").substr(0, 9), "runs past the end"},
      {"header over 100 MB", huge + "{}", "100 MB"},
      {"not an object", make_file("[]", ""), "must be a JSON object"},
      {"float in shape", make_file("{" + entry("x", R"("dtype":"F32","shape":[2.0],"data_offsets":[0,8])") + "}", f32x2), "floating-point"},
      {"unknown dtype", make_file("{" + entry("x", R"("dtype":"U8","shape":[8],"data_offsets":[0,8])") + "}", f32x2), "\"U8\" is not supported"},
      {"missing data_offsets", make_file("{" + entry("x", R"("dtype":"F32","shape":[2])") + "}", f32x2), "lacks data_offsets"},
      {"unknown field", make_file("{" + entry("x", R"("dtype":"F32","shape":[2],"data_offsets":[0,8],"q":1)") + "}", f32x2), "unknown field"},
      {"begin > end", make_file("{" + entry("x", R"("dtype":"F32","shape":[0],"data_offsets":[8,0])") + "}", f32x2), "begin 8 > end 0"},
      {"end past data", make_file("{" + entry("x", R"("dtype":"F32","shape":[4],"data_offsets":[0,16])") + "}", f32x2), "past the data section"},
      {"size mismatch", make_file("{" + entry("x", R"("dtype":"F32","shape":[3],"data_offsets":[0,8])") + "}", f32x2), "needs 3 x 4"},
      {"negative dim", make_file("{" + entry("x", R"("dtype":"F32","shape":[-2],"data_offsets":[0,8])") + "}", f32x2), "non-negative"},
      {"overlap", make_file("{" + good + "," + entry("y", R"("dtype":"F32","shape":[1],"data_offsets":[4,8])") + "}", f32x2), "overlap"},
      {"duplicate name", make_file("{" + good + "," + good + "}", f32x2), "duplicate key"},
      {"metadata value not a string", make_file(R"({"__metadata__":{"a":1}})", ""), "must be a string"},
      {"true literal", make_file(R"({"__metadata__":true})", ""), "unsupported JSON value"},
      {"deep nesting", make_file("{\"a\":" + std::string(40, '[') + std::string(40, ']') + "}", ""), "nesting"},
      {"trailing bytes", make_file("{}x", ""), "after the header object"},
      {"unterminated string", make_file("{\"abc", ""), "unterminated string"},
      {"bad escape", make_file(R"({"a\q":1})", ""), "invalid escape"},
      {"lone surrogate", make_file(R"({"__metadata__":{"a":"\udc00"}})", ""), "surrogate"},
      {"huge integer", make_file("{" + entry("x", R"("dtype":"F32","shape":[99999999999999999999],"data_offsets":[0,8])") + "}", f32x2), "out of range"},
      {"I64 out of i32 range", make_file("{" + entry("x", R"("dtype":"I64","shape":[1],"data_offsets":[0,8])") + "}", raw<int64_t>({int64_t(1) << 40})), "does not fit in i32"},
  };
  for (const auto& c : cases) {
    INFO("case: ", c.what);
    std::string msg = load_error(dir, c.bytes);
    CHECK_MESSAGE(msg.find(c.expect) != std::string::npos, "message: ", msg);
    CHECK(msg.find("case.safetensors") != std::string::npos);
    CHECK(msg.find("byte") != std::string::npos);
  }
  // Allowed: gaps in the data section, empty tensors, whitespace, escaped names.
  std::string ok = make_file(" { \"a\\u00e9\" : {\"shape\":[1],\"dtype\":\"F32\",\"data_offsets\":[4,8]},"
                             "\"z\":{\"dtype\":\"F64\",\"shape\":[0,3],\"data_offsets\":[4,4]}}  ", f32x2);
  CHECK(load_error(dir, ok) == "");
  SafetensorsFile f = load_safetensors(dir.file("case.safetensors"));
  CHECK(f.tensors.at("a\xc3\xa9").item() == 2.0);
  CHECK(f.tensors.at("z").shape() == Shape{0, 3});
  CHECK_THROWS_WITH_AS(load_safetensors(dir.file("missing.safetensors")), doctest::Contains("missing.safetensors"), Error);
  CHECK_THROWS_AS(load_safetensors(dir.path.string()), Error);  // a directory
}

TEST_CASE("safetensors: corrupted files never crash and never load partially") {
  TempDir dir;
  std::map<std::string, Tensor> ts;
  ts["w"] = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  ts["ids"] = Tensor::from_vector<int32_t>({7, 8, 9}, {3});
  ts["d"] = Tensor::from_vector<double>({0.5, -0.25}, {2});
  std::string p = dir.file("good.safetensors");
  save_safetensors(p, ts, {{"k", "v"}});
  const std::string good = read_bytes(p);
  uint64_t n;
  std::memcpy(&n, good.data(), 8);
  const size_t data_start = 8 + n;
  std::string all_data;  // the original tensors' bytes in name order
  for (const auto& [name, t] : ts) all_data += tensor_bytes(t);

  int64_t tried = 0, rejected = 0, accepted_header_flips = 0;
  // (1) Truncation at every byte offset: always an error (the data section is fully used).
  for (size_t len = 0; len < good.size(); ++len) {
    ++tried;
    std::string msg = load_error(dir, good.substr(0, len));
    CHECK_MESSAGE(!msg.empty(), "truncated to ", len, " bytes loaded without an error");
    rejected += !msg.empty();
  }
  // (2) Flips in the length and the header: an error, or (a flip inside a name or the metadata
  // value, or whitespace) a full load of every tensor with the same byte count.
  const unsigned char patterns[] = {0x01, 0x20, 0x80, 0xFF};
  for (size_t i = 0; i < data_start; ++i)
    for (unsigned char x : patterns) {
      std::string bad = good;
      bad[i] = (char)(bad[i] ^ x);
      ++tried;
      std::string msg = load_error(dir, bad);
      if (!msg.empty()) { ++rejected; continue; }
      ++accepted_header_flips;
      SafetensorsFile f = load_safetensors(dir.file("case.safetensors"));
      size_t bytes = 0;
      for (const auto& [name, t] : f.tensors) bytes += t.nbytes();
      CHECK_MESSAGE((f.tensors.size() == ts.size() && bytes == all_data.size()),
                    "flip ", int(x), " at header byte ", i, " loaded a partial file");
    }
  // (3) Flips in the raw data: loads, and exactly that byte differs.
  for (size_t i = data_start; i < good.size(); ++i)
    for (unsigned char x : {0x01, 0x80, 0xFF}) {
      std::string bad = good;
      bad[i] = (char)(bad[i] ^ x);
      ++tried;
      std::string msg = load_error(dir, bad);
      REQUIRE_MESSAGE(msg.empty(), "a data flip was rejected: ", msg);
      SafetensorsFile f = load_safetensors(dir.file("case.safetensors"));
      std::string got;
      for (const auto& [name, t] : f.tensors) got += tensor_bytes(t);
      std::string want = all_data;
      want[i - data_start] = (char)(want[i - data_start] ^ x);
      CHECK(got == want);
    }
  MESSAGE("safetensors corruption: ", tried, " corrupted files tried (", good.size(),
          " truncations, ", data_start * 4, " header flips, ", (good.size() - data_start) * 3,
          " data flips); ", rejected, " rejected with mg::Error, ", accepted_header_flips,
          " header flips loaded completely (names/metadata/whitespace)");
  CHECK(tried == (int64_t)(good.size() + data_start * 4 + (good.size() - data_start) * 3));
}

TEST_CASE("safetensors: writes are atomic") {
  TempDir dir;
  std::map<std::string, Tensor> small = {{"x", Tensor::from_vector<float>({1, 2}, {2})}};
  // A path in a directory that does not exist: an error, and nothing is created.
  std::string nowhere = dir.file("no/such/dir/m.safetensors");
  CHECK_THROWS_WITH_AS(save_safetensors(nowhere, small), doctest::Contains("no/such/dir"), Error);
  CHECK_FALSE(fs::exists(dir.path / "no"));
  CHECK(dir.count() == 0);

  std::string p = dir.file("m.safetensors");
  save_safetensors(p, small);
  const std::string old = read_bytes(p);

  // A bad tensor (undefined): rejected before the disk is touched; the old file stays.
  std::map<std::string, Tensor> bad = {{"a", Tensor::ones({3})}, {"b", Tensor()}};
  CHECK_THROWS_WITH_AS(save_safetensors(p, bad), doctest::Contains("undefined"), Error);
  CHECK(read_bytes(p) == old);
  CHECK(dir.count() == 1);

  // A real failure in the middle of writing: cap the file size (RLIMIT_FSIZE) so write()
  // fails with EFBIG after the header. The temp file must vanish and the old file survive.
  {
    struct rlimit saved {};
    REQUIRE(getrlimit(RLIMIT_FSIZE, &saved) == 0);
    auto old_handler = signal(SIGXFSZ, SIG_IGN);
    struct rlimit cap = saved;
    cap.rlim_cur = 4096;
    REQUIRE(setrlimit(RLIMIT_FSIZE, &cap) == 0);
    std::map<std::string, Tensor> big = {{"x", Tensor::zeros({100000})}};
    std::string msg;
    try {
      save_safetensors(p, big);
    } catch (const Error& e) {
      msg = e.what();
    }
    setrlimit(RLIMIT_FSIZE, &saved);
    signal(SIGXFSZ, old_handler);
    CHECK_MESSAGE(msg.find("write failed") != std::string::npos, "message: ", msg);
    CHECK(read_bytes(p) == old);
    CHECK(dir.count() == 1);
  }

  // A successful overwrite replaces the content and leaves no temporary behind.
  std::map<std::string, Tensor> next = {{"y", Tensor::from_vector<double>({3.0}, {1})}};
  save_safetensors(p, next);
  CHECK(dir.count() == 1);
  CHECK(load_safetensors(p).tensors.at("y").item() == 3.0);
  CHECK_THROWS_AS(save_safetensors(p, {{"__metadata__", Tensor::ones({1})}}), Error);
}
