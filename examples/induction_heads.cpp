// examples/induction_heads — the paper's Induction Heads task (Mamba §4.1.2, App. E.1): a
// trigger token appears twice; after the second (the last input) the model must output the
// token that followed the first. Trained at one length (256), then evaluated at every power
// of two from 2^6 up to --max-eval-len (default 2^14) to measure length generalisation; the
// score is the accuracy of the one answer per sequence (data/synthetic.h has the layout).
//
//   ./build/examples/induction_heads                      # reduced run, then 2^6 .. 2^14
//   ./build/examples/induction_heads --paper              # 204,800 steps at batch 8 (25 "epochs")
//   ./build/examples/induction_heads --max-eval-len 1048576 --length-eval-seqs 32
//
// The reduced configuration (the default; docs/synthetic_tasks.md has the runs) keeps the task
// (V 16, train L 256) and the model (2 layers, D 64) and trains with batch 32 and LR 2e-3 (100
// warm-up steps, then constant) instead of batch 8 and 1e-3, so that it leaves the loss plateau
// within minutes on 2 CPU cores; it stops once the held-out accuracy at L 256 is 100%.
//
// Long sequences are evaluated with the recurrent state (nn/inference.h): the first
// --prefill-len tokens go through the parallel forward (prefill), the rest one token at a time
// with MambaLM::step, whose state is O(1) in the length; only the last position's logits are
// scored. Memory is therefore bounded by the prefill chunk, whatever the length.
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "examples/task_common.h"

using namespace mg;

namespace {

// Accuracy at one length over n_seqs fresh sequences, chunk sequences at a time.
data::AnswerScore eval_length(const nn::MambaLM& model, int64_t L, int32_t vocab, int64_t n_seqs,
                              int64_t chunk, int64_t prefill_len, Generator& gen) {
  NoGradGuard no_grad;
  data::InductionHeadsConfig c;
  c.seq_len = L;
  c.vocab_size = vocab;
  data::AnswerScore total;
  for (int64_t done = 0; done < n_seqs; done += chunk) {
    const int64_t nb = std::min(chunk, n_seqs - done);
    data::SyntheticBatch b = data::induction_heads_batch(c, nb, gen);
    const std::vector<int32_t> ids = b.inputs.to_vector<int32_t>();
    const std::vector<int32_t> tg = b.targets.to_vector<int32_t>();
    const int64_t P = std::max<int64_t>(1, std::min(prefill_len, L));
    std::vector<int32_t> prefix(nb * P), column(nb), answer(nb);
    for (int64_t i = 0; i < nb; ++i) {
      std::copy(ids.begin() + i * L, ids.begin() + i * L + P, prefix.begin() + i * P);
      answer[i] = tg[i * L + L - 1];  // the only scored position
    }
    nn::InferenceState state;
    Tensor logits = model.prefill(Tensor::from_vector(prefix, {nb, P}), state, 1);  // (nb, 1, V_pad)
    for (int64_t t = P; t < L; ++t) {
      for (int64_t i = 0; i < nb; ++i) column[i] = ids[i * L + t];
      logits = model.step(Tensor::from_vector(column, {nb}), state);  // (nb, V_pad)
    }
    total += data::score_answers(logits.view({nb, 1, -1}), Tensor::from_vector(answer, {nb, 1}));
  }
  return total;
}

std::string pow2_name(int64_t L) {
  int p = 0;
  while ((int64_t(1) << p) < L) ++p;
  return "2^" + std::to_string(p);
}

}  // namespace

int main(int argc, char** argv) {
  examples::TrainFlags f;
  int64_t train_len = 256, vocab = 16, min_eval_len = 64, max_eval_len = 16384;
  int64_t length_eval_seqs = 256, length_eval_chunk = 256, prefill_len = 512;
  f.batch = 32;
  f.lr = 2e-3;
  f.schedule = "constant";
  f.warmup = 100;
  f.steps = 3000;
  f.eval_every = 100;
  f.eval_batches = 8;
  f.eval_batch = 64;
  f.target_acc = 100;
  if (examples::has_switch(argc, argv, "--paper")) {  // P App. E.1: 25 epochs of 8192 steps
    f.batch = 8;
    f.lr = 1e-3;
    f.warmup = 0;
    f.target_acc = 0;
    f.steps = 204800;
    f.eval_every = 8192;
    f.ckpt_every = 8192;
    max_eval_len = 1 << 20;
    length_eval_seqs = 64;
    length_eval_chunk = 64;
  }

  examples::Cli cli("induction_heads",
                    "Trains a Mamba LM on the paper's Induction Heads task at one length and evaluates "
                    "length generalisation at powers of two, with the recurrent state.");
  cli.section("task");
  cli.add("--train-len", &train_len, "training sequence length (paper: 256)", {.min = 3, .max = 1 << 24});
  cli.add("--vocab", &vocab, "vocabulary incl. the trigger (V-1) (paper: 16)", {.min = 3, .max = 1 << 20});
  cli.add("--min-eval-len", &min_eval_len, "shortest evaluated length (a power of two)", {.min = 4, .max = 1 << 30});
  cli.add("--max-eval-len", &max_eval_len, "longest evaluated length (paper: 2^20 = 1048576)", {.min = 4, .max = 1 << 30});
  cli.add("--length-eval-seqs", &length_eval_seqs, "sequences per evaluated length (0: skip)", {.min = 0});
  cli.add("--length-eval-chunk", &length_eval_chunk, "sequences evaluated together (memory ~ chunk * prefill)",
          {.min = 1, .max = 1 << 20});
  cli.add("--prefill-len", &prefill_len, "tokens run through the parallel prefill before stepping", {.min = 0});
  examples::add_train_flags(cli, f);
  if (!cli.parse(argc, argv)) return cli.exit_code();
  if (int rc = examples::check_train_flags(cli, f)) return rc;
  if (max_eval_len < min_eval_len)
    return cli.error("--max-eval-len " + std::to_string(max_eval_len),
                     "must be at least --min-eval-len " + std::to_string(min_eval_len));

  return examples::run_main("induction_heads", [&] {
    auto t_program = examples::Clock::now();
    data::InductionHeadsConfig task_cfg;
    task_cfg.seq_len = train_len;
    task_cfg.vocab_size = (int32_t)vocab;
    task_cfg.validate();
    auto make = [&](int64_t n, Generator& gen) { return data::induction_heads_batch(task_cfg, n, gen); };

    // Data streams 11 (training) and 12 (the held-out set at the training length).
    examples::SyntheticRun run(
        "induction_heads", f, vocab, /*first_stream=*/11, make,
        examples::strf("induction heads: train L = %lld, V = %lld%s", (long long)train_len, (long long)vocab,
                       f.paper ? " — paper configuration" : ""));
    const nn::MambaLM& model = run.model;
    const train::TrainResult& r = run.train(cli, train_len,
                                            {{"task", "induction_heads"},
                                             {"train_len", std::to_string(train_len)},
                                             {"vocab", std::to_string(vocab)}},
                                            /*one_answer=*/true);
    if (r.interrupted) return run.exit_after_signal();
    if (!examples::lead_rank()) return 0;  // [data parallel] rank 0 scores and prints
    examples::EvalResult at_train = examples::score_batches(model, run.eval_set);

    // Length generalisation with the recurrent state.
    std::vector<int64_t> lengths;
    std::vector<double> accs;
    double eval_seconds = 0;
    if (length_eval_seqs > 0) {
      std::printf("\nlength generalisation: %lld sequences per length, prefill %lld tokens then step\n",
                  (long long)length_eval_seqs, (long long)prefill_len);
      for (int64_t L = min_eval_len; L <= max_eval_len; L *= 2) {
        auto t0 = examples::Clock::now();
        Generator gen = run.stream(1000 + (uint64_t)L);
        data::AnswerScore s = eval_length(model, L, (int32_t)vocab, length_eval_seqs, length_eval_chunk,
                                          prefill_len, gen);
        double sec = examples::seconds_since(t0);
        eval_seconds += sec;
        lengths.push_back(L);
        accs.push_back(100.0 * s.accuracy());
        std::printf("  L = %-8lld (%-5s) accuracy %6.2f%% (%lld/%lld)  %.1f s\n", (long long)L,
                    pow2_name(L).c_str(), accs.back(), (long long)s.correct, (long long)s.answers, sec);
        std::fflush(stdout);
      }
    }

    std::printf("\n==== induction heads: summary ====\n");
    std::printf("config      train L %lld, V %lld; %s; %lld params\n", (long long)train_len, (long long)vocab,
                run.mcfg.str().c_str(), (long long)model.num_parameters());
    run.print_training_summary();
    std::printf("wall time   training %s, length evaluation %s, program %s\n",
                examples::fmt_duration(r.seconds).c_str(), examples::fmt_duration(eval_seconds).c_str(),
                examples::fmt_duration(examples::seconds_since(t_program)).c_str());
    std::printf("accuracy    %.2f%% at the training length (%lld held-out sequences)\n",
                100.0 * at_train.score.accuracy(), (long long)at_train.score.answers);
    if (!lengths.empty()) {
      char params[32];
      std::snprintf(params, sizeof params, "%.1fK", model.num_parameters() / 1000.0);
      std::string head = "| Model | Params |", rule = "|---|---|", row = std::string("| Mamba | ") + params + " |";
      for (size_t i = 0; i < lengths.size(); ++i) {
        char cell[32];
        std::snprintf(cell, sizeof cell, " %.1f |", accs[i]);
        head += " " + pow2_name(lengths[i]) + " |";
        rule += "---|";
        row += cell;
      }
      std::printf("\n%s\n%s\n%s\n", head.c_str(), rule.c_str(), row.c_str());
      std::printf("(paper, Table 2: Mamba 74K params, 100 at every length 2^6 .. 2^20)\n");
    }
    return 0;
  });
}
