// Every op against PyTorch: golden fixtures made by tests/reference/make_op_fixtures.py.
//
// For each case of ops_fixtures.safetensors we run the op in f32 (inputs exactly as stored),
// backpropagate the stored cotangents dout_j, and compare every output and every input
// gradient with PyTorch's float64 result:
//     error = max |ours - ref| / max(max |ref|, 1e-6)  <  1e-5.
// A fixture case whose op this file does not know is a failure, so a new case in the script
// cannot be silently skipped.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <set>
#include <sstream>

#include "autograd/tape.h"
#include "core/safetensors.h"
#include "ops/arith.h"
#include "ops/conv1d.h"
#include "ops/gelu.h"
#include "ops/embedding.h"
#include "ops/matmul.h"
#include "ops/norm.h"
#include "ops/reduce.h"
#include "ops/shape.h"
#include "ops/softmax.h"
#include "ops/unary.h"

using namespace mg;

namespace {

// "op=sum dim=1 keepdim=1" -> {op: sum, dim: 1, keepdim: 1}
struct CaseArgs {
  std::map<std::string, std::string> kv;
  explicit CaseArgs(const std::string& text) {
    std::istringstream in(text);
    std::string word;
    while (in >> word) {
      size_t eq = word.find('=');
      REQUIRE_MESSAGE(eq != std::string::npos, "bad fixture metadata word '", word, "'");
      kv[word.substr(0, eq)] = word.substr(eq + 1);
    }
  }
  bool has(const std::string& k) const { return kv.count(k) > 0; }
  const std::string& str(const std::string& k) const {
    auto it = kv.find(k);
    if (it == kv.end()) throw Error("fixture metadata lacks '" + k + "'");
    return it->second;
  }
  int64_t i(const std::string& k) const { return std::stoll(str(k)); }
  double d(const std::string& k) const { return std::stod(str(k)); }
  std::vector<int64_t> ints(const std::string& k) const {
    std::vector<int64_t> v;
    std::istringstream in(str(k));
    std::string part;
    while (std::getline(in, part, ',')) v.push_back(std::stoll(part));
    return v;
  }
};

using Ins = std::vector<Tensor>;
using OpFn = std::function<std::vector<Tensor>(const Ins&, const CaseArgs&)>;
Tensor opt(const Ins& in, size_t k) { return k < in.size() ? in[k] : Tensor(); }

// The one place that maps a fixture op name to mambagrad.
const std::map<std::string, OpFn>& op_table() {
  using V = std::vector<Tensor>;
  static const std::map<std::string, OpFn> table = {
      {"add", [](const Ins& x, const CaseArgs&) { return V{add(x[0], x[1])}; }},
      {"sub", [](const Ins& x, const CaseArgs&) { return V{sub(x[0], x[1])}; }},
      {"mul", [](const Ins& x, const CaseArgs&) { return V{mul(x[0], x[1])}; }},
      {"div", [](const Ins& x, const CaseArgs&) { return V{div(x[0], x[1])}; }},
      {"neg", [](const Ins& x, const CaseArgs&) { return V{neg(x[0])}; }},
      {"exp", [](const Ins& x, const CaseArgs&) { return V{exp(x[0])}; }},
      {"log", [](const Ins& x, const CaseArgs&) { return V{log(x[0])}; }},
      {"sqrt", [](const Ins& x, const CaseArgs&) { return V{sqrt(x[0])}; }},
      {"rsqrt", [](const Ins& x, const CaseArgs&) { return V{rsqrt(x[0])}; }},
      {"pow", [](const Ins& x, const CaseArgs& a) { return V{pow(x[0], a.d("p"))}; }},
      {"sigmoid", [](const Ins& x, const CaseArgs&) { return V{sigmoid(x[0])}; }},
      {"silu", [](const Ins& x, const CaseArgs&) { return V{silu(x[0])}; }},
      {"gelu", [](const Ins& x, const CaseArgs&) { return V{gelu(x[0])}; }},
      {"softplus", [](const Ins& x, const CaseArgs&) { return V{softplus(x[0])}; }},
      {"tanh", [](const Ins& x, const CaseArgs&) { return V{tanh(x[0])}; }},
      {"relu", [](const Ins& x, const CaseArgs&) { return V{relu(x[0])}; }},
      {"sum", [](const Ins& x, const CaseArgs& a) {
         return V{a.has("dim") ? sum(x[0], a.i("dim"), a.i("keepdim") != 0) : sum(x[0])}; }},
      {"mean", [](const Ins& x, const CaseArgs& a) {
         return V{a.has("dim") ? mean(x[0], a.i("dim"), a.i("keepdim") != 0) : mean(x[0])}; }},
      {"max", [](const Ins& x, const CaseArgs& a) {
         return V{a.has("dim") ? max(x[0], a.i("dim"), a.i("keepdim") != 0) : max(x[0])}; }},
      {"softmax", [](const Ins& x, const CaseArgs& a) { return V{softmax(x[0], a.i("dim"))}; }},
      {"log_softmax", [](const Ins& x, const CaseArgs& a) { return V{log_softmax(x[0], a.i("dim"))}; }},
      {"cross_entropy", [](const Ins& x, const CaseArgs& a) {
         return V{cross_entropy(x[0], x[1], (int32_t)a.i("ignore_index"))}; }},
      {"matmul", [](const Ins& x, const CaseArgs&) { return V{matmul(x[0], x[1])}; }},
      {"linear", [](const Ins& x, const CaseArgs&) { return V{linear(x[0], x[1], opt(x, 2))}; }},
      {"transpose", [](const Ins& x, const CaseArgs& a) { return V{transpose(x[0], a.i("d0"), a.i("d1"))}; }},
      {"split", [](const Ins& x, const CaseArgs& a) { return split(x[0], a.ints("sizes"), a.i("dim")); }},
      {"chunk", [](const Ins& x, const CaseArgs& a) { return chunk(x[0], a.i("chunks"), a.i("dim")); }},
      {"cat", [](const Ins& x, const CaseArgs& a) { return V{cat(x, a.i("dim"))}; }},
      {"slice", [](const Ins& x, const CaseArgs& a) {
         return V{slice(x[0], a.i("dim"), a.i("start"), a.i("end"))}; }},
      {"embedding", [](const Ins& x, const CaseArgs&) { return V{embedding(x[0], x[1])}; }},
      {"causal_conv1d", [](const Ins& x, const CaseArgs&) { return V{causal_conv1d(x[0], x[1], opt(x, 2))}; }},
      {"rms_norm", [](const Ins& x, const CaseArgs& a) { return V{rms_norm(x[0], x[1], a.d("eps"))}; }},
      {"layer_norm", [](const Ins& x, const CaseArgs& a) {
         return V{layer_norm(x[0], x[1], opt(x, 2), a.d("eps"))}; }},
  };
  return table;
}

const SafetensorsFile& fixtures() {
  static const SafetensorsFile f = load_safetensors(std::string(MG_TEST_DATA_DIR) + "/ops_fixtures.safetensors");
  return f;
}

// max|ours - ref| / max(max|ref|, 1e-6); infinity when shapes differ or a value is not finite.
double relative_error(const Tensor& ours, const Tensor& ref) {
  if (!ours.defined() || ours.shape() != ref.shape() || ours.dtype() != DType::f32) return INFINITY;
  auto a = ours.to_vector<float>(), b = ref.to_vector<float>();
  double diff = 0, scale = 1e-6;
  for (size_t i = 0; i < a.size(); ++i) {
    double d = std::abs((double)a[i] - (double)b[i]);
    diff = std::isfinite(d) ? std::max(diff, d) : INFINITY;
    scale = std::max(scale, std::abs((double)b[i]));
  }
  return diff / scale;
}

std::vector<Tensor> numbered(const std::string& c, const char* what) {
  std::vector<Tensor> v;
  const auto& t = fixtures().tensors;
  for (int k = 0; t.count(c + "." + what + std::to_string(k)); ++k) v.push_back(t.at(c + "." + what + std::to_string(k)));
  return v;
}

struct CaseResult {
  double worst = 0;
  std::string report;  // one line per compared tensor
};

// Runs one fixture case: forward, then one backward per output (the leaves accumulate).
CaseResult run_case(const std::string& c, const OpFn& fn, const CaseArgs& args) {
  const auto& t = fixtures().tensors;
  std::vector<Tensor> ins;
  for (const Tensor& x : numbered(c, "in")) {
    Tensor leaf = x.clone();
    if (is_floating(leaf.dtype())) leaf.requires_grad_();
    ins.push_back(leaf);
  }
  std::vector<Tensor> refs = numbered(c, "out"), douts = numbered(c, "dout");
  CaseResult r;
  auto compare = [&](const std::string& name, const Tensor& ours, const Tensor& ref) {
    double e = relative_error(ours, ref);
    r.worst = std::max(r.worst, e);
    r.report += "  " + name + ": relative error " + std::to_string(e) +
                (ours.defined() ? " shape " + shape_str(ours.shape()) : " (undefined)") +
                " vs reference " + shape_str(ref.shape()) + "\n";
  };
  std::vector<Tensor> outs = fn(ins, args);
  if (outs.size() != refs.size()) {
    r.worst = INFINITY;
    r.report = "  op returned " + std::to_string(outs.size()) + " outputs, expected " + std::to_string(refs.size()) + "\n";
    return r;
  }
  for (size_t j = 0; j < outs.size(); ++j) compare("out" + std::to_string(j), outs[j], refs[j]);
  for (size_t j = 0; j < outs.size(); ++j) {
    if (j > 0) outs = fn(ins, args);  // backward consumed the tape: rebuild it
    backward(outs[j], douts[j]);
  }
  for (size_t i = 0; i < ins.size(); ++i) {
    std::string name = c + ".grad" + std::to_string(i);
    if (t.count(name)) compare("grad" + std::to_string(i), ins[i].grad(), t.at(name));
  }
  return r;
}

}  // namespace

TEST_CASE("reference ops: every op matches PyTorch (float64 reference) to 1e-5 in f32") {
  const auto& table = op_table();
  int cases = 0;
  double worst = 0;
  std::string worst_case;
  std::set<std::string> ops_seen;
  for (const auto& [c, desc] : fixtures().metadata) {
    if (c == "fixture_format" || c == "generator") continue;
    CaseArgs args(desc);
    const std::string& op = args.str("op");
    ops_seen.insert(op);
    auto it = table.find(op);
    if (it == table.end()) {
      FAIL_CHECK("fixture case ", c, " uses op '", op, "' that this test does not know");
      continue;
    }
    ++cases;
    CaseResult r;
    try {
      r = run_case(c, it->second, args);
    } catch (const Error& e) {
      r.worst = INFINITY;
      r.report = std::string("  threw: ") + e.what() + "\n";
    }
    CHECK_MESSAGE(r.worst < 1e-5, "case ", c, " (", desc, ")\n", r.report);
    if (r.worst > worst || worst_case.empty()) { worst = r.worst; worst_case = c; }
  }
  CHECK(cases >= 60);
  CHECK(ops_seen.size() == table.size());  // every op of the table has a fixture
  MESSAGE("reference ops: ", cases, " fixture cases over ", ops_seen.size(), " ops; worst relative error ",
          worst, " (", worst_case, ")");
}
