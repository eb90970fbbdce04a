// core/bf16.h: f32 -> bf16 rounds to nearest even, exactly as PyTorch does (fixtures made by
// tests/reference/make_bf16_fixtures.py: 4096 values, specials and random bit patterns), and
// bf16 -> f32 is exact.
#include <doctest/doctest.h>

#include <unistd.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "autograd/tape.h"
#include "core/bf16.h"
#include "core/safetensors.h"
#include "nn/layers.h"
#include "ops/arith.h"
#include "ops/convert.h"
#include "ops/gelu.h"
#include "ops/reduce.h"
#include "test_util.h"

using namespace mg;

TEST_CASE("bf16: round to nearest even at hand-picked edges") {
  auto r = [](uint32_t f32_bits) { return bf16::from_f32(std::bit_cast<float>(f32_bits)); };
  CHECK(r(0x3F800000) == 0x3F80);  // 1.0 exact
  CHECK(r(0x3F808000) == 0x3F80);  // tie, kept bit even: down
  CHECK(r(0x3F818000) == 0x3F82);  // tie, kept bit odd: up
  CHECK(r(0x3F807FFF) == 0x3F80);  // below the tie: down
  CHECK(r(0x3F808001) == 0x3F81);  // above the tie: up
  CHECK(r(0x80000000) == 0x8000);  // -0 keeps its sign
  CHECK(r(0x7F800000) == 0x7F80);  // +inf
  CHECK(r(0x7F7FFFFF) == 0x7F80);  // above the largest bf16 by more than half a step: inf
  CHECK(r(0x7F7F7FFF) == 0x7F7F);  // just below the halfway point: the largest bf16
  CHECK(std::isnan(bf16::to_f32(r(0x7F800001))));  // a signalling NaN stays NaN (not inf)
  CHECK(std::isnan(bf16::to_f32(r(0xFFC00001))));
  CHECK(bf16::to_f32(0x3F81) == 1.0078125f);  // widening is exact
  CHECK(round_to_bf16(3.14159265f) == 3.140625f);
}

TEST_CASE("bf16: f32 -> bf16 equals PyTorch on 4096 values (specials and random bit patterns)") {
  SafetensorsFile f = load_safetensors(std::string(MG_TEST_DATA_DIR) + "/bf16_fixtures.safetensors");
  const Tensor x = f.tensors.at("x"), want = f.tensors.at("bf16_bits"), nan = f.tensors.at("bf16_is_nan");
  const int64_t n = x.numel();
  REQUIRE(n == 4096);
  std::vector<bf16> got(n);
  f32_to_bf16(x.data<float>(), got.data(), n);
  std::vector<float> back(n);
  bf16_to_f32(got.data(), back.data(), n);
  int64_t mismatches = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (nan.data<int32_t>()[i]) {
      if (!std::isnan(back[i])) ++mismatches;
      continue;
    }
    if (got[i].bits != uint16_t(want.data<int32_t>()[i])) {
      ++mismatches;
      if (mismatches < 5)
        MESSAGE("x bits ", std::bit_cast<uint32_t>(x.data<float>()[i]), ": got ", got[i].bits,
                ", torch ", want.data<int32_t>()[i] & 0xFFFF);
    }
    CHECK(back[i] == bf16::to_f32(got[i].bits));  // widening is exact
  }
  CHECK(mismatches == 0);
}

// ---- DType::bf16: tensors, casts, printing, safetensors ------------------------------------

namespace {
float from_bits(uint32_t b) { return std::bit_cast<float>(b); }
uint16_t bits_of(const Tensor& t, int64_t i) { return t.data<bf16>()[i].bits; }
}  // namespace

TEST_CASE("bf16: Tensor::cast rounds to nearest even at the edges; widening back is exact") {
  const std::vector<float> x{
      1.0f, from_bits(0x3F808000), from_bits(0x3F818000),  // exact, tie to even (down), tie (up)
      from_bits(0x00008000), from_bits(0x00018000),         // f32 subnormal ties: down, up
      from_bits(0x00010000), from_bits(0x0000C000),         // smallest bf16 subnormal; 3/4 of it
      INFINITY, -INFINITY, NAN,
      3.4e38f, -3.4e38f,                                    // above the largest bf16 + half: inf
      from_bits(0x7F7F7FFF), -0.0f};
  const Tensor t = Tensor::from_vector(x, {(int64_t)x.size()}).cast(DType::bf16);
  CHECK(t.dtype() == DType::bf16);
  CHECK(t.nbytes() == 2 * x.size());
  const std::vector<uint16_t> want{0x3F80, 0x3F80, 0x3F82, 0x0000, 0x0002, 0x0001, 0x0001,
                                   0x7F80, 0xFF80, 0x7FC0, 0x7F80, 0xFF80, 0x7F7F, 0x8000};
  for (size_t i = 0; i < want.size(); ++i) {
    CAPTURE(i);
    if (std::isnan(x[i])) CHECK(std::isnan(bf16::to_f32(bits_of(t, (int64_t)i))));
    else CHECK(bits_of(t, (int64_t)i) == want[i]);
  }
  const std::vector<float> back = t.cast(DType::f32).to_vector<float>();
  for (size_t i = 0; i < want.size(); ++i)
    if (!std::isnan(x[i])) CHECK(std::bit_cast<uint32_t>(back[i]) == uint32_t(want[i]) << 16);
  // f64 and i32 sources round through f32.
  CHECK(bits_of(Tensor::from_vector(std::vector<double>{1.00390625}, {1}).cast(DType::bf16), 0) == 0x3F80);
  CHECK(bits_of(Tensor::from_vector(std::vector<int32_t>{257}, {1}).cast(DType::bf16), 0) == 0x4380);
  CHECK(Tensor::full({2}, 3.14159265, DType::bf16).cast(DType::f64).to_vector<double>()[1] == 3.140625);
  CHECK(Tensor::scalar(-2.5, DType::bf16).item() == -2.5);
}

TEST_CASE("bf16: to(x, bf16) is differentiable; a bf16 tensor used twice gets both gradients") {
  Tensor x = Tensor::from_vector(std::vector<float>{1.0f, from_bits(0x3F818000)}, {2}).requires_grad_();
  Tensor xb = to(x, DType::bf16);                               // (2) bf16
  Tensor y = sum(to(xb, DType::f32) * 3.0f + to(xb, DType::f32));  // d/dxb = 3 + 1, summed in bf16
  backward(y);
  REQUIRE(x.grad().defined());
  CHECK(x.grad().dtype() == DType::f32);
  CHECK(x.grad().to_vector<float>() == std::vector<float>{4.0f, 4.0f});
  CHECK(y.item() == 4.0 * (1.0 + 1.015625));
}

TEST_CASE("bf16: printing names the dtype and shows the bf16 values") {
  const Tensor t = Tensor::from_vector(std::vector<float>{1.0f, 3.14159265f}, {2}).cast(DType::bf16);
  const std::string s = t.str();
  CHECK(s.find("dtype=bf16") != std::string::npos);
  CHECK(s.find("3.141") != std::string::npos);  // 3.140625 at 4 significant digits
  CHECK(std::string(dtype_name(DType::bf16)) == "bf16");
  CHECK(dtype_size(DType::bf16) == 2);
  // An op without a bf16 form says so by name instead of computing on the wrong bytes.
  const std::string msg = test::error_of([&] { gelu(t); });
  CHECK(test::has(msg, "gelu: expected f32 or f64, got bf16 (this op has no bf16 form"));
}

TEST_CASE("bf16: safetensors keeps BF16 bit for bit both ways; bad dtypes name the tensor") {
  const std::string dir = (std::filesystem::temp_directory_path() /
                           ("mg_bf16_" + std::to_string(getpid()))).string();
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/t.safetensors";
  const Tensor a = Tensor::randn({3, 5}, DType::f32).cast(DType::bf16);
  save_safetensors(path, {{"a", a}, {"f", Tensor::ones({2})}});
  SafetensorsFile f = load_safetensors(path);
  REQUIRE(f.tensors.at("a").dtype() == DType::bf16);
  CHECK(std::memcmp(f.tensors.at("a").raw_data(), a.raw_data(), a.nbytes()) == 0);
  CHECK(f.tensors.at("f").dtype() == DType::f32);
  // A bf16 file loads into f32 parameters (exact widening); an i32 one is refused by name.
  Tensor p = Tensor::zeros({3, 5});
  p.copy_values_from(f.tensors.at("a"));
  CHECK(p.to_vector<float>() == a.cast(DType::f32).to_vector<float>());
  nn::Linear lin(5, 3, /*with_bias=*/false, default_generator());
  lin.load_state_dict({{"weight", f.tensors.at("a")}});
  CHECK(lin.weight.dtype() == DType::f32);
  CHECK(lin.weight.to_vector<float>() == a.cast(DType::f32).to_vector<float>());
  const std::string msg = test::error_of([&] {
    lin.load_state_dict({{"weight", Tensor::zeros({3, 5}, DType::i32)}});
  });
  CHECK(test::has(msg, "weight (i32)"));
  CHECK(test::has(test::error_of([&] { lin.to(DType::bf16); }), "Settings::precision"));
  // An unsupported file dtype is named with its tensor.
  std::string header = R"({"w8":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})";
  while (header.size() % 8) header += ' ';
  std::string bytes(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(bytes.data(), &n, 8);
  bytes += header + std::string(2, '\0');
  std::ofstream(dir + "/bad.safetensors", std::ios::binary) << bytes;
  const std::string bad = test::error_of([&] { load_safetensors(dir + "/bad.safetensors"); });
  CHECK(test::has(bad, "\"w8\""));
  CHECK(test::has(bad, "F8_E4M3"));
  std::filesystem::remove_all(dir);
}
