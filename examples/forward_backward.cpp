// examples/forward_backward.cpp — one forward (and optionally backward) pass of a Mamba LM on
// given tokens, written to a safetensors file: the tool for comparing mambagrad with another
// implementation (PyTorch, Hugging Face) on the same checkpoint.
//
//   forward_backward --weights model.safetensors --tokens tokens.safetensors --out out.safetensors
//   forward_backward --weights models/mamba-130m-hf --tokens t.safetensors --out o.safetensors \
//                    --grads --dtype f64
//
// Input:  --weights  any checkpoint form nn/checkpoint.h reads (a mambagrad file, a Hugging
//                    Face directory, sharded safetensors, state-spaces names, no config at all)
//         --tokens   a safetensors file holding `input_ids`, I32 or I64, shape (B, L), L >= 2
// Output: logits               F32 (B, L, V)  V = the embedding's rows (the padded vocabulary)
//         loss                 F32 ()         mean cross-entropy of logits[:, :-1] vs ids[:, 1:]
//         grad.<parameter>     F32, the parameter's shape, d loss / d parameter   (--grads)
// The computation runs in --dtype (f32 or f64, the latter on CPU only) and is cast to F32 on
// output. The same inputs always give the same bytes (the CPU kernels do not depend on the
// thread count). Errors (bad paths, shapes, token ids outside the vocabulary) go to stderr
// with exit code 1; usage errors exit with 2.
#include <cstdio>
#include <map>
#include <memory>
#include <string>

#include "autograd/tape.h"
#include "core/safetensors.h"
#include "examples/cli.h"
#include "nn/checkpoint.h"
#include "ops/shape.h"
#include "ops/softmax.h"

using namespace mg;

namespace {

// input_ids (B, L) from `path`, checked against the model's vocabulary.
Tensor read_tokens(const std::string& path, const nn::MambaConfig& cfg) {
  SafetensorsFile f = load_safetensors(path);  // I64 becomes i32 (out-of-range values rejected)
  auto it = f.tensors.find("input_ids");
  MG_CHECK(it != f.tensors.end(), "forward_backward: ", path, " has no tensor 'input_ids'");
  const Tensor ids = it->second;
  MG_CHECK(ids.dtype() == DType::i32, "forward_backward: ", path,
           ": input_ids must be I32 or I64, got ", dtype_name(ids.dtype()));
  MG_CHECK(ids.dim() == 2 && ids.size(0) >= 1 && ids.size(1) >= 2, "forward_backward: ", path,
           ": input_ids must have shape (B, L) with B >= 1 and L >= 2 (the loss predicts token t+1 "
           "from t), got ", shape_str(ids.shape()));
  // Ids in [vocab_size, V_pad) index padding rows that no tokenizer produces: also an error.
  const int32_t* id = ids.data<int32_t>();
  for (int64_t i = 0; i < ids.numel(); ++i)
    MG_CHECK(id[i] >= 0 && id[i] < cfg.vocab_size, "forward_backward: ", path, ": input_ids[",
             i / ids.size(1), ", ", i % ids.size(1), "] = ", id[i],
             " is outside the model's vocabulary [0, ", cfg.vocab_size, ")");
  return ids;
}

Tensor to_host_f32(const Tensor& t) {
  Tensor h = t.detach();
  if (!h.device().is_cpu()) h = h.copy_to(Device::cpu());
  return h.dtype() == DType::f32 ? h : h.cast(DType::f32);
}

int run(const std::string& weights, const std::string& tokens, const std::string& out,
        bool grads, const std::string& dtype_name_arg, const std::string& device_arg) {
  MG_CHECK(dtype_name_arg == "f32" || dtype_name_arg == "f64",
           "forward_backward: --dtype must be f32 or f64, got '", dtype_name_arg, "'");
  const DType dtype = dtype_name_arg == "f64" ? DType::f64 : DType::f32;
  const Device device = parse_device(device_arg);
  MG_CHECK(!(dtype == DType::f64 && device.is_cuda()),
           "forward_backward: f64 runs on the CPU only (use --dtype f32 with --device cuda)");

  nn::MambaLM model = nn::load_mamba(weights, dtype, device);
  const Tensor ids_host = read_tokens(tokens, model.config());
  const Tensor ids = device.is_cpu() ? ids_host : ids_host.copy_to(device);
  const int64_t B = ids.size(0), L = ids.size(1), V = model.config().padded_vocab();

  Tensor logits, loss;
  {
    // One forward; the loss reads the same logits (no second pass).
    std::unique_ptr<NoGradGuard> no_grad = grads ? nullptr : std::make_unique<NoGradGuard>();
    logits = model.forward(ids);                                      // (B, L, V)
    Tensor pred = reshape(slice(logits, 1, 0, L - 1), {B * (L - 1), V});
    Tensor target = slice(ids, 1, 1, L).view({B * (L - 1)});
    loss = cross_entropy(pred, target);                               // ()
    if (grads) backward(loss);
  }

  std::map<std::string, Tensor> result = {{"logits", to_host_f32(logits)},
                                          {"loss", to_host_f32(loss)}};
  if (grads)
    for (const nn::NamedParam& p : model.named_parameters()) {
      MG_CHECK(p.tensor.grad().defined(), "forward_backward: ", p.name, " received no gradient");
      result["grad." + p.name] = to_host_f32(p.tensor.grad());
    }
  save_safetensors(out, result, {{"weights", weights}, {"tokens", tokens}, {"dtype", dtype_name_arg}});
  std::fprintf(stderr, "forward_backward: %s, ids (%lld, %lld), loss %.6f -> %s (%zu tensors)\n",
               model.config().str().c_str(), (long long)B, (long long)L, loss.item(), out.c_str(),
               result.size());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  examples::Cli cli("forward_backward",
                    "Runs a Mamba LM forward (and backward) on given tokens and writes logits, the\n"
                    "mean next-token loss and, with --grads, every parameter's gradient (all F32)\n"
                    "to a safetensors file.");
  std::string weights, tokens, out, dtype = "f32", device = "cpu";
  bool grads = false;
  cli.usage({"forward_backward --weights PATH --tokens FILE --out FILE [options]"});
  cli.add("--weights", &weights, "checkpoint: safetensors file, HF directory or index.json (required)",
          {.placeholder = "PATH"});
  cli.add("--tokens", &tokens, "safetensors file with input_ids, I32 or I64, (B, L) (required)",
          {.placeholder = "FILE"});
  cli.add("--out", &out, "output safetensors file (required)", {.placeholder = "FILE"});
  cli.add("--grads", &grads, "also write grad.<name> for every parameter");
  cli.add("--dtype", &dtype, "compute dtype (f64: CPU only)", {.choices = {"f32", "f64"}});
  cli.add("--device", &device, "where to run", {.choices = {"cpu", "cuda"}});
  if (!cli.parse(argc, argv)) return cli.exit_code();
  for (auto [flag, value] : {std::pair{"--weights", &weights}, {"--tokens", &tokens}, {"--out", &out}})
    if (value->empty()) return cli.error(flag, "required (see --help)");
  try {
    return run(weights, tokens, out, grads, dtype, device);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "forward_backward: %s\n", e.what());
    return 1;
  }
}
