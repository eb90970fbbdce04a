// examples/generate.cpp — text generation with a Mamba model, streamed token by token.
//
//   generate --weights model.safetensors --prompt "Once upon a time" --max-new-tokens 200
//   echo "Once upon a time" | generate --weights model.safetensors --temperature 0.8 --top-p 0.9
//   generate --random-init --d-model 256 --n-layer 4 --prompt "hi"        (a smoke test)
//   generate --bench-step          (decode speed of a 768 x 24 model after 16 and 1024 tokens)
//
// The prompt goes through the parallel path once (prefill); every further token costs one
// recurrent step, O(1) in the length so far. Text is byte-level (data/byte_tokenizer.h): a
// model trained by examples/train on bytes (V = 256). For other vocabularies use --prompt-ids
// and --print-ids (token ids in, token ids out).
//
// --device cuda is accepted but generation still runs on the CPU: the prefill's state capture
// (causal_conv1d_state) and the per-token kernels (causal_conv1d_step, selective_scan_step)
// are CPU-only so far. The flag checks the GPU at start (a clear error without one, or in a build
// without CUDA), then says on stderr that the model stays on the CPU.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <sstream>
#include <string>

#include "autograd/grad_mode.h"
#include "core/allocator.h"
#include "core/parallel.h"
#include "core/safetensors.h"
#include "data/byte_tokenizer.h"
#include "examples/device_flag.h"
#include "nn/checkpoint.h"
#include "nn/mamba.h"
#include "nn/sampling.h"

using namespace mg;
using namespace mg::nn;

namespace {

const char* kHelp = R"(usage: generate (--weights PATH | --random-init) [options]
       generate --bench-step [--json]

model:
  --weights PATH           a checkpoint: safetensors file, HF directory or index.json
  --random-init            a randomly initialised model (smoke tests), shaped by:
  --d-model N (256)  --n-layer N (4)  --vocab N (256)  --init-seed N (0)
prompt and output:
  --prompt TEXT            the prompt (default: read stdin to its end)
  --prompt-ids 1,2,3       the prompt as token ids (models with a non-byte vocabulary)
  --print-ids              print token ids instead of bytes
sampling:
  --max-new-tokens N (256) --temperature T (1.0; 0 = greedy)  --top-k K (0 = off)
  --top-p P (1.0 = off)    --min-p P (0 = off)   --repetition-penalty R (1.0 = off)
  --seed N (0)
device:
  --device cpu|cuda (cpu)  cuda: checked at start, but generation runs on the CPU in this
                           version (the recurrent step is CPU-only)
benchmark:
  --bench-step             tokens/s of step() at batch 1, d_model 768 x 24 layers, V 256,
                           after prompts of 16 and 1024 tokens (it should not depend on them)
  --steps N (64)           decode steps timed per prompt length
  --json                   one JSON object per line instead of the table
)";

struct Args {
  std::string weights, prompt, prompt_ids, device = "cpu";
  bool have_prompt = false, random_init = false, print_ids = false, bench = false, json = false;
  int64_t d_model = 256, n_layer = 4, vocab = 256, max_new = 256, steps = 64;
  uint64_t seed = 0, init_seed = 0;
  SamplingOptions sampling;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string f = argv[i];
    auto value = [&]() -> std::string {
      MG_CHECK(i + 1 < argc, "generate: ", f, " needs a value (see --help)");
      return argv[++i];
    };
    auto num = [&]() { return std::stod(value()); };
    if (f == "--help" || f == "-h") { std::cout << kHelp; std::exit(0); }
    else if (f == "--weights") a.weights = value();
    else if (f == "--random-init") a.random_init = true;
    else if (f == "--d-model") a.d_model = (int64_t)num();
    else if (f == "--n-layer") a.n_layer = (int64_t)num();
    else if (f == "--vocab") a.vocab = (int64_t)num();
    else if (f == "--init-seed") a.init_seed = (uint64_t)num();
    else if (f == "--prompt") { a.prompt = value(); a.have_prompt = true; }
    else if (f == "--prompt-ids") a.prompt_ids = value();
    else if (f == "--print-ids") a.print_ids = true;
    else if (f == "--max-new-tokens") a.max_new = (int64_t)num();
    else if (f == "--temperature") a.sampling.temperature = num();
    else if (f == "--top-k") a.sampling.top_k = (int64_t)num();
    else if (f == "--top-p") a.sampling.top_p = num();
    else if (f == "--min-p") a.sampling.min_p = num();
    else if (f == "--repetition-penalty") a.sampling.repetition_penalty = num();
    else if (f == "--seed") a.seed = (uint64_t)num();
    else if (f == "--bench-step") a.bench = true;
    else if (f == "--steps") a.steps = (int64_t)num();
    else if (f == "--json") a.json = true;
    else if (f == "--device") a.device = value();
    else throw Error("generate: unknown option '" + f + "' (see --help)");
  }
  a.sampling.validate();
  return a;
}

// Any checkpoint form nn/checkpoint.h reads: a mambagrad file, a Hugging Face directory
// (single or sharded), state-spaces names, or no config at all (inferred from the shapes).
MambaLM load_model(const std::string& path) { return load_mamba(path); }

std::vector<int32_t> parse_ids(const std::string& s) {
  std::vector<int32_t> ids;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) ids.push_back((int32_t)std::stol(item));
  return ids;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int bench_step(const Args& a) {
  MambaConfig c;
  c.d_model = 768;
  c.n_layer = 24;
  c.vocab_size = 256;
  MambaLM model(c, 0);
  NoGradGuard no_grad;
  Generator g(1);
  if (!a.json)
    std::printf("step() at batch 1, %s, %d thread(s)\n%8s %14s %14s %14s\n", c.str().c_str(),
                num_threads(), "prompt", "prefill tok/s", "step tok/s", "ms/token");
  for (int64_t L : {16, 1024}) {
    std::vector<int32_t> prompt(L);
    for (auto& t : prompt) t = (int32_t)g.next_below(256);
    InferenceState state;
    auto t0 = std::chrono::steady_clock::now();
    model.prefill(Tensor::from_vector(prompt, {1, L}), state, 1);
    const double prefill_s = seconds_since(t0);
    Tensor tok = Tensor::from_vector(std::vector<int32_t>{7}, {1});
    for (int i = 0; i < 4; ++i) model.step(tok, state);  // warm-up
    t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < a.steps; ++i) model.step(tok, state);
    const double step_s = seconds_since(t0);
    const double tps = a.steps / step_s;
    if (a.json)
      std::printf("{\"bench\": \"step\", \"d_model\": 768, \"n_layer\": 24, \"prompt\": %ld, "
                  "\"prefill_tok_s\": %.1f, \"step_tok_s\": %.2f, \"ms_per_token\": %.3f}\n",
                  (long)L, L / prefill_s, tps, 1e3 / tps);
    else
      std::printf("%8ld %14.1f %14.2f %14.3f\n", (long)L, L / prefill_s, tps, 1e3 / tps);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    Args a = parse(argc, argv);
    if (examples::open_device(a.device).first.is_cuda()) {  // no GPU: one clear error, now
      std::fprintf(stderr, "note: --device %s: generation runs on the CPU in this version (the "
                   "prefill's state capture and the recurrent step, nn/inference.cpp, are "
                   "CPU-only); the model stays on the CPU\n", a.device.c_str());
    }
    if (a.bench) return bench_step(a);
    MG_CHECK(a.random_init != !a.weights.empty(),
             "generate: give exactly one of --weights PATH or --random-init (see --help)");
    MambaConfig rc;
    rc.d_model = a.d_model;
    rc.n_layer = a.n_layer;
    rc.vocab_size = a.vocab;
    MambaLM model = a.random_init ? MambaLM(rc, a.init_seed) : load_model(a.weights);
    const MambaConfig& c = model.config();

    data::ByteTokenizer tok;
    std::vector<int32_t> prompt;
    if (!a.prompt_ids.empty()) {
      prompt = parse_ids(a.prompt_ids);
    } else {
      if (!a.have_prompt) {
        std::ostringstream in;
        in << std::cin.rdbuf();
        a.prompt = in.str();
      }
      if (c.vocab_size != tok.vocab_size())
        std::fprintf(stderr, "note: the model's vocabulary is %ld, not bytes (256): the prompt "
                     "is still encoded as bytes; see --prompt-ids / --print-ids\n",
                     (long)c.vocab_size);
      prompt = tok.encode(a.prompt);
    }
    MG_CHECK(!prompt.empty(), "generate: the prompt is empty");
    std::fprintf(stderr, "%s, %ld parameters, prompt %zu tokens\n", c.str().c_str(),
                 (long)model.num_parameters(), prompt.size());

    Generator gen(a.seed);
    GenerateResult r = generate(model, prompt, a.max_new, a.sampling, gen, [&](int32_t t) {
      if (a.print_ids) std::printf("%d ", t);
      else std::fputs(tok.decode_one(t).c_str(), stdout);
      std::fflush(stdout);
      return true;
    });
    std::printf("\n");
    // The first new token comes from the prefill's logits; each later one costs one step.
    const size_t steps = r.tokens.empty() ? 0 : r.tokens.size() - 1;
    std::fprintf(stderr, "prefill: %ld tokens in %.3f s (%.1f tok/s); decode: %zu steps in "
                 "%.3f s (%.2f tok/s)\n", (long)r.prompt_tokens, r.prefill_seconds,
                 r.prompt_tokens / r.prefill_seconds, steps, r.decode_seconds,
                 steps / std::max(r.decode_seconds, 1e-9));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
