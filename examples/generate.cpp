// examples/generate.cpp — text generation with a Mamba model, streamed token by token.
//
//   generate --model models/mamba-130m-hf --prompt "Once upon a time" --max-tokens 200
//   generate --model DIR --prompt "Hi" --device cuda --temperature 0.8 --top-p 0.9
//   generate --model DIR --batch prompts.txt --max-tokens 64      (one prompt per line, together)
//   generate --weights model.safetensors --prompt "Once upon a time"   (byte-level: our models)
//   generate --random-init --d-model 256 --n-layer 4 --prompt "hi"     (a smoke test)
//
// --model DIR is a Hugging Face model directory: config.json (HF or state-spaces names),
// model.safetensors or shards with model.safetensors.index.json, and tokenizer.json (GPT-NeoX
// byte-level BPE; data/tokenizer.h). Text streams out as it is decoded (data::DecodeStream
// holds back a UTF-8 character still arriving); a sequence stops at EOS (the tokenizer's, else
// config.json's eos_token_id; --ignore-eos to run on) or after --max-tokens. Prompt and
// generation speeds go to stderr separately.
//
// The prompts go through the parallel path once (prefill); every further token is one
// recurrent step, O(1) in the length so far (nn/decoder.h). --device cuda runs both on the GPU:
// the step is captured in a CUDA graph (one launch per token) and sampling happens there, so
// only one int per sequence comes back per token.
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "autograd/grad_mode.h"
#include "core/allocator.h"
#include "core/parallel.h"
#include "core/safetensors.h"
#include "core/json.h"
#include "data/tokenizer.h"
#include "examples/cli.h"
#include "examples/device_flag.h"
#include "nn/checkpoint.h"
#include "nn/decoder.h"
#include "nn/mamba.h"
#include "nn/sampling.h"

using namespace mg;
using namespace mg::nn;

namespace {

struct Args {
  std::string model_dir, weights, tokenizer, prompt, prompt_ids, batch_file, device = "cpu";
  bool have_prompt = false, random_init = false, print_ids = false, bench = false, json = false;
  bool ignore_eos = false, no_graph = false;
  int64_t d_model = 256, n_layer = 4, vocab = 256, max_new = 256, steps = 64;
  int64_t seed = 0, init_seed = 0;
  SamplingOptions sampling;
};

// Declares every flag on `cli` (ranges checked by the parser: examples/cli.h).
void add_flags(examples::Cli& cli, Args& a) {
  cli.usage({"generate --model DIR (--prompt TEXT | --batch FILE) [options]",
             "generate (--weights PATH | --random-init) [options]", "generate --bench-step [--json]"});
  cli.section("model");
  cli.add("--model", &a.model_dir, "a Hugging Face model directory: config.json, model.safetensors "
          "(or shards + index), tokenizer.json", {.placeholder = "DIR"});
  cli.add("--tokenizer", &a.tokenizer, "tokenizer.json, a model directory or 'byte' (default: the "
          "--model directory's, else byte)", {.placeholder = "SPEC"});
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
  cli.add("--batch", &a.batch_file, "a file of prompts, one per line (blank lines skipped), generated "
          "together as one batch", {.placeholder = "FILE"});
  cli.add("--print-ids", &a.print_ids, "print token ids instead of text");
  cli.section("sampling");
  cli.add("--max-tokens", &a.max_new, "tokens to generate per sequence (at most)", {.min = 0, .max = 1 << 30});
  cli.add("--max-new-tokens", &a.max_new, "the same as --max-tokens", {.min = 0, .max = 1 << 30});
  cli.add("--ignore-eos", &a.ignore_eos, "do not stop at the end-of-text token");
  cli.add("--temperature", &a.sampling.temperature, "sampling temperature (0: greedy)", {.min = 0, .max = 100});
  cli.add("--top-k", &a.sampling.top_k, "keep the k most likely tokens (0: off)", {.min = 0});
  cli.add("--top-p", &a.sampling.top_p, "nucleus threshold (1: off)", {.min = 0, .min_open = true, .max = 1});
  cli.add("--min-p", &a.sampling.min_p, "drop tokens below min-p times the top probability (0: off)", {.min = 0, .max = 1});
  cli.add("--repetition-penalty", &a.sampling.repetition_penalty, "divide repeated tokens' logits (1: off)",
          {.min = 0, .min_open = true, .max = 1000});
  cli.add("--seed", &a.seed, "seed of the sampler", {.min = 0});
  cli.section("device");
  cli.add("--device", &a.device, "where the model runs (cuda: prefill, steps and sampling on the GPU)",
          {.choices = {"cpu", "cuda"}});
  cli.add("--no-graph", &a.no_graph, "cuda: launch the step's kernels one by one instead of "
          "replaying a CUDA graph");
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

// The stop tokens: the tokenizer's EOS, else config.json's eos_token_id (a number or a list).
std::vector<int32_t> eos_ids(const data::Tokenizer& tok, const std::string& model_dir) {
  if (auto id = tok.eos_id()) return {*id};
  std::vector<int32_t> ids;
  if (model_dir.empty()) return ids;
  const std::string path = model_dir + "/config.json";
  if (!std::ifstream(path)) return ids;
  json::Value cfg = json::parse_file(path);
  if (!cfg.is_object() || !cfg.contains("eos_token_id")) return ids;
  const json::Value& e = cfg.at("eos_token_id");
  if (e.is_number()) ids.push_back((int32_t)e.as_int());
  else if (e.is_array())
    for (const json::Value& v : e.as_array())
      if (v.is_number()) ids.push_back((int32_t)v.as_int());
  return ids;
}

// The prompts of --batch FILE: one per line, blank lines skipped.
std::vector<std::string> read_prompt_lines(const std::string& path) {
  std::ifstream f(path);
  MG_CHECK(f, "--batch ", path, ": cannot open the file");
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(f, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") != std::string::npos) lines.push_back(line);
  }
  MG_CHECK(!lines.empty(), "--batch ", path, ": no prompt in the file (one per line)");
  return lines;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  examples::Cli cli("generate", "Generates text with a Mamba model, streamed token by token (prefill, "
                    "then one O(1) recurrent step per token).");
  add_flags(cli, a);
  if (!cli.parse(argc, argv)) return cli.exit_code();
  a.have_prompt = cli.given("--prompt");
  const int sources = !a.model_dir.empty() + !a.weights.empty() + a.random_init;
  if (!a.bench && sources != 1)
    return cli.error("--model / --weights / --random-init", "give exactly one of them (see --help)");
  if (a.have_prompt + !a.prompt_ids.empty() + !a.batch_file.empty() > 1)
    return cli.error("--prompt / --prompt-ids / --batch", "give at most one of them");
  if (a.have_prompt && a.prompt.empty()) return cli.error("--prompt", "empty (a prompt needs at least one byte)");
  try {
    const Device dev = examples::open_device(a.device).first;  // no GPU: one clear error, now
    if (a.bench) return bench_step(a);
    MambaConfig rc;
    rc.d_model = a.d_model;
    rc.n_layer = a.n_layer;
    rc.vocab_size = a.vocab;
    MambaLM model = a.random_init ? MambaLM(rc, (uint64_t)a.init_seed)
                                  : load_model(a.model_dir.empty() ? a.weights : a.model_dir);
    const MambaConfig& c = model.config();
    if (dev.is_cuda()) model.to(dev);
    std::string tok_spec = a.tokenizer;
    if (tok_spec.empty()) tok_spec = a.model_dir.empty() ? "byte" : a.model_dir;
    std::unique_ptr<data::Tokenizer> tok = data::load_tokenizer(tok_spec);
    if (tok->vocab_size() > c.padded_vocab())
      std::fprintf(stderr, "note: the tokenizer (%s) has %d ids, the model %ld: ids beyond the model "
                   "are refused\n", tok->describe().c_str(), tok->vocab_size(), (long)c.padded_vocab());

    // The prompts as token ids.
    std::vector<std::string> texts;
    std::vector<std::vector<int32_t>> prompts;
    if (!a.prompt_ids.empty()) {
      prompts.push_back(parse_ids(a.prompt_ids, c.vocab_size));
    } else {
      if (!a.batch_file.empty()) {
        texts = read_prompt_lines(a.batch_file);
      } else {
        if (!a.have_prompt) {
          if (isatty(STDIN_FILENO))  // a person at a terminal: say what the wait is for
            std::fprintf(stderr, "generate: no --prompt given: reading the prompt from the terminal; "
                         "end it with Ctrl-D (or pass --prompt TEXT)\n");
          std::ostringstream in;
          in << std::cin.rdbuf();
          a.prompt = in.str();
        }
        texts.push_back(a.prompt);
      }
      for (size_t i = 0; i < texts.size(); ++i) {
        prompts.push_back(tok->encode(texts[i]));
        MG_CHECK(!prompts.back().empty(), "prompt ", i + 1, " encodes to no tokens",
                 a.have_prompt || !a.batch_file.empty() ? "" : " (stdin held nothing; pass --prompt TEXT)");
        for (int32_t id : prompts.back())
          MG_CHECK(id < c.vocab_size, "prompt ", i + 1, " has token id ", id,
                   " outside the model's vocabulary (", c.vocab_size, "): is --tokenizer the model's?");
      }
    }
    const int64_t B = (int64_t)prompts.size();
    std::fprintf(stderr, "%s, %ld parameters, %s, tokenizer %s, %ld prompt(s)\n", c.str().c_str(),
                 (long)model.num_parameters(), dev.str().c_str(), tok->describe().c_str(), (long)B);

    BatchOptions opts;
    opts.max_new_tokens = a.max_new;
    opts.sampling = a.sampling;
    opts.use_graph = !a.no_graph;
    if (!a.ignore_eos) opts.eos = eos_ids(*tok, a.model_dir);
    Generator gen((uint64_t)a.seed);
    // Batch 1 streams as it goes; a batch prints each sequence when all are done.
    std::vector<data::DecodeStream> streams(B, data::DecodeStream(*tok));
    std::vector<std::string> outputs(B);
    BatchGeneration r = generate_batch(model, prompts, opts, gen, [&](int64_t b, int32_t t) {
      const bool is_eos = std::find(opts.eos.begin(), opts.eos.end(), t) != opts.eos.end();
      std::string piece = a.print_ids ? std::to_string(t) + " " : is_eos ? "" : streams[b].push(t);
      if (B == 1) {
        std::fputs(piece.c_str(), stdout);
        std::fflush(stdout);
      } else {
        outputs[b] += piece;
      }
      return true;
    });
    for (int64_t b = 0; b < B; ++b) {
      const std::string tail = a.print_ids ? "" : streams[b].finish();
      if (B == 1) {
        std::printf("%s\n", tail.c_str());
      } else {
        std::printf("=== %ld: %s\n%s%s\n", (long)(b + 1), texts.empty() ? "" : texts[b].c_str(),
                    outputs[b].c_str(), tail.c_str());
      }
    }
    const int64_t gen_tokens = r.generated();
    std::fprintf(stderr, "prompt: %ld tokens in %.3f s (%.1f tok/s); generation: %ld tokens in "
                 "%.3f s (%.2f tok/s; %ld steps of batch %ld)\n", (long)r.prompt_tokens,
                 r.prefill_seconds, r.prompt_tokens / std::max(r.prefill_seconds, 1e-9),
                 (long)gen_tokens, r.decode_seconds, gen_tokens / std::max(r.decode_seconds, 1e-9),
                 (long)r.decode_steps, (long)B);
    if (dev.is_cuda())
      std::fprintf(stderr, "cuda graph: %s\n", r.graph_used ? "used" : r.graph_note.c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "generate: %s\n", e.what());
    return 1;
  }
}
