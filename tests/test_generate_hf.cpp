// generate on a Hugging Face-layout directory (tests/reference/tiny_mamba_hf, made by
// make_tiny_hf_model.py: random weights in two shards + index, a trained tokenizer.json):
// greedy generation is deterministic and its ids equal the parallel forward's argmax chain
// (each next id = argmax of forward(prompt + ids so far) at the last position), for one prompt
// and for a batch of prompts of different lengths decoding together.
#include <doctest/doctest.h>

#include <algorithm>
#include <string>

#include "data/tokenizer.h"
#include "nn/checkpoint.h"
#include "nn/decoder.h"
#include "nn/mamba.h"
#include "ops/shape.h"

using namespace mg;
using namespace mg::nn;

namespace {

const std::string kDir = std::string(MG_TEST_DATA_DIR) + "/tiny_mamba_hf";

// Greedy over ids < V by the parallel forward; stops after an EOS, like generate.
std::vector<int32_t> argmax_chain(const MambaLM& m, std::vector<int32_t> seq, int64_t n,
                                  int32_t eos) {
  std::vector<int32_t> out;
  const int64_t V = m.config().vocab_size;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t L = (int64_t)seq.size();
    Tensor logits = m.forward(Tensor::from_vector(seq, {1, L}));  // (1, L, V_pad)
    std::vector<float> last = slice(logits, 1, L - 1, L).to_vector<float>();
    const int32_t best = (int32_t)(std::max_element(last.begin(), last.begin() + V) - last.begin());
    out.push_back(best);
    seq.push_back(best);
    if (best == eos) break;
  }
  return out;
}

}  // namespace

TEST_CASE("generate --model on a tiny HF directory: greedy ids are deterministic and equal the argmax chain") {
  MambaLM model = load_mamba(kDir);  // config.json + two shards via the index
  CHECK(model.config().n_layer == 2);
  CHECK(model.config().d_state == 8);
  auto tok = data::load_tokenizer(kDir);
  REQUIRE(tok->eos_id().has_value());
  CHECK(*tok->eos_id() == 0);
  const std::vector<std::string> texts = {"Hello world, the", "It is", "42 numbers and  spaces"};
  std::vector<std::vector<int32_t>> prompts;
  for (const auto& t : texts) prompts.push_back(tok->encode(t));
  BatchOptions o;
  o.max_new_tokens = 24;
  o.sampling.temperature = 0;
  o.eos = {0};
  Generator g1(1), g2(2);  // greedy ignores the generator
  BatchGeneration one = generate_batch(model, {prompts[0]}, o, g1);
  BatchGeneration again = generate_batch(model, {prompts[0]}, o, g2);
  CHECK(one.tokens == again.tokens);
  const std::vector<int32_t> chain = argmax_chain(model, prompts[0], 24, 0);
  CHECK(one.tokens[0] == chain);
  // Not a degenerate chain: several distinct tokens.
  std::vector<int32_t> distinct = chain;
  std::sort(distinct.begin(), distinct.end());
  CHECK(std::unique(distinct.begin(), distinct.end()) - distinct.begin() >= 5);
  // The batch (ragged prompts) decodes each sequence as if alone.
  Generator g3(3);
  BatchGeneration batch = generate_batch(model, prompts, o, g3);
  for (size_t b = 0; b < prompts.size(); ++b) {
    CAPTURE(b);
    CHECK(batch.tokens[b] == argmax_chain(model, prompts[b], 24, 0));
  }
  // Streaming the ids through DecodeStream gives decode's text.
  data::DecodeStream stream(*tok);
  std::string text;
  for (int32_t id : one.tokens[0]) text += stream.push(id);
  text += stream.finish();
  CHECK(text == tok->decode(one.tokens[0]));
  CHECK(!text.empty());
}
