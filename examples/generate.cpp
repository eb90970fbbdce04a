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
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
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
#include "examples/cli.h"
#include "examples/device_flag.h"
#include "nn/checkpoint.h"
#include "nn/mamba.h"
#include "nn/sampling.h"

using namespace mg;
using namespace mg::nn;

namespace {

struct Args {
  std::string weights, prompt, prompt_ids, device = "cpu";
  bool have_prompt = false, random_init = false, print_ids = false, bench = false, json = false;
  int64_t d_model = 256, n_layer = 4, vocab = 256, max_new = 256, steps = 64;
  int64_t seed = 0, init_seed = 0;
  SamplingOptions sampling;
};

// Declares every flag on `cli` (ranges checked by the parser: examples/cli.h).
void add_flags(examples::Cli& cli, Args& a) {
  cli.usage({"generate (--weights PATH | --random-init) [options]", "generate --bench-step [--json]"});
  cli.section("model");
  cli.add("--weights", &a.weights, "a checkpoint: safetensors file, HF directory or index.json", {.placeholder = "PATH"});
  cli.add("--random-init", &a.random_init, "a randomly initialised model (smoke tests), shaped by the next four flags");
  cli.add("--d-model", &a.d_model, "model width D (--random-init)", {.min = 1, .max = 65536});
  cli.add("--n-layer", &a.n_layer, "Mamba blocks (--random-init)", {.min = 1, .max = 1024});
  cli.add("--vocab", &a.vocab, "vocabulary (--random-init)", {.min = 1, .max = 1 << 24});
  cli.add("--init-seed", &a.init_seed, "seed of the initialisation (--random-init)", {.min = 0});
  cli.section("prompt and output");
  cli.add("--prompt", &a.prompt, "the prompt (without it: read from stdin to its end)");
  cli.add("--prompt-ids", &a.prompt_ids, "the prompt as comma-separated token ids (non-byte vocabularies)",
          {.placeholder = "1,2,3"});
  cli.add("--print-ids", &a.print_ids, "print token ids instead of bytes");
  cli.section("sampling");
  cli.add("--max-new-tokens", &a.max_new, "tokens to generate", {.min = 0, .max = 1 << 30});
  cli.add("--temperature", &a.sampling.temperature, "sampling temperature (0: greedy)", {.min = 0, .max = 100});
  cli.add("--top-k", &a.sampling.top_k, "keep the k most likely tokens (0: off)", {.min = 0});
  cli.add("--top-p", &a.sampling.top_p, "nucleus threshold (1: off)", {.min = 0, .min_open = true, .max = 1});
  cli.add("--min-p", &a.sampling.min_p, "drop tokens below min-p times the top probability (0: off)", {.min = 0, .max = 1});
  cli.add("--repetition-penalty", &a.sampling.repetition_penalty, "divide repeated tokens' logits (1: off)",
          {.min = 0, .min_open = true, .max = 1000});
  cli.add("--seed", &a.seed, "seed of the sampler", {.min = 0});
  cli.section("device");
  cli.add("--device", &a.device, "cuda is checked at start, but generation runs on the CPU in this version "
          "(the recurrent step is CPU-only)", {.choices = {"cpu", "cuda"}});
  cli.section("benchmark");
  cli.add("--bench-step", &a.bench, "tokens/s of step() at batch 1, d_model 768 x 24 layers, V 256, after "
          "prompts of 16 and 1024 tokens (it should not depend on them)");
  cli.add("--steps", &a.steps, "decode steps timed per prompt length (--bench-step)", {.min = 1, .max = 1 << 20});
  cli.add("--json", &a.json, "one JSON object per line instead of the table (--bench-step)");
  cli.note("Exit status 1: an error (named on stderr); 2: a bad flag.");
}

// Any checkpoint form nn/checkpoint.h reads: a mambagrad file, a Hugging Face directory
// (single or sharded), state-spaces names, or no config at all (inferred from the shapes).
MambaLM load_model(const std::string& path) { return load_mamba(path); }

// "1,2,3" -> {1, 2, 3}; anything else is an error naming --prompt-ids.
std::vector<int32_t> parse_ids(const std::string& s, int64_t vocab) {
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (pos <= s.size()) {
    const size_t comma = std::min(s.find(',', pos), s.size());
    const std::string item = s.substr(pos, comma - pos);
    char* end = nullptr;
    errno = 0;
    const long long v = std::strtoll(item.c_str(), &end, 10);
    MG_CHECK(!item.empty() && *end == 0 && errno == 0 && v >= 0 && v < vocab,
             "--prompt-ids: '", item, "' (item ", ids.size() + 1, ") is not a token id in [0, ",
             vocab, ")");
    ids.push_back((int32_t)v);
    pos = comma + 1;
  }
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
  Args a;
  examples::Cli cli("generate", "Generates text with a Mamba model, streamed token by token (prefill, "
                    "then one O(1) recurrent step per token).");
  add_flags(cli, a);
  if (!cli.parse(argc, argv)) return cli.exit_code();
  a.have_prompt = cli.given("--prompt");
  if (!a.bench && a.random_init == !a.weights.empty())
    return cli.error("--weights / --random-init", "give exactly one of them (see --help)");
  if (a.have_prompt && !a.prompt_ids.empty())
    return cli.error("--prompt / --prompt-ids", "give at most one of them");
  if (a.have_prompt && a.prompt.empty()) return cli.error("--prompt", "empty (a prompt needs at least one byte)");
  try {
    if (examples::open_device(a.device).first.is_cuda()) {  // no GPU: one clear error, now
      std::fprintf(stderr, "note: --device %s: generation runs on the CPU in this version (the "
                   "prefill's state capture and the recurrent step, nn/inference.cpp, are "
                   "CPU-only); the model stays on the CPU\n", a.device.c_str());
    }
    if (a.bench) return bench_step(a);
    MambaConfig rc;
    rc.d_model = a.d_model;
    rc.n_layer = a.n_layer;
    rc.vocab_size = a.vocab;
    MambaLM model = a.random_init ? MambaLM(rc, (uint64_t)a.init_seed) : load_model(a.weights);
    const MambaConfig& c = model.config();

    data::ByteTokenizer tok;
    std::vector<int32_t> prompt;
    if (!a.prompt_ids.empty()) {
      prompt = parse_ids(a.prompt_ids, c.vocab_size);
    } else {
      if (!a.have_prompt) {
        if (isatty(STDIN_FILENO))  // a person at a terminal: say what the wait is for
          std::fprintf(stderr, "generate: no --prompt given: reading the prompt from the terminal; "
                       "end it with Ctrl-D (or pass --prompt TEXT)\n");
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
    MG_CHECK(!prompt.empty(), "the prompt is empty (stdin held nothing; pass --prompt TEXT)");
    std::fprintf(stderr, "%s, %ld parameters, prompt %zu tokens\n", c.str().c_str(),
                 (long)model.num_parameters(), prompt.size());

    Generator gen((uint64_t)a.seed);
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
    std::fprintf(stderr, "generate: %s\n", e.what());
    return 1;
  }
}
