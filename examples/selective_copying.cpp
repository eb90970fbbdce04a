// examples/selective_copying — the paper's Selective Copying task (Mamba §4.1.1, App. E.1):
// a noisy region holds num_data data tokens at random positions; after it, at each delimiter
// the model must output the next data token, in order. Accuracy = correct answer tokens / all
// answer tokens (data/synthetic.h has the exact layout), on a fixed held-out set.
//
//   ./build/examples/selective_copying                  # reduced: region 128, >= 99% in minutes
//   ./build/examples/selective_copying --paper          # L 4096, batch 64, LR 1e-4, 400K steps
//   ./build/examples/selective_copying --run-dir runs/sc --resume latest
//
// The reduced configuration (the default; docs/synthetic_tasks.md has the runs) keeps the
// task's vocabulary (16), its 16 data tokens and the model (2 layers, D 64) and shortens the
// noisy region from 4080 to 128 tokens, with batch 32, a larger learning rate and warm-up +
// cosine, so that it reaches 99% on 2 CPU cores within 15 minutes. It stops at --target-acc 99.5.
#include <algorithm>
#include <cstdio>
#include <string>

#include "examples/task_common.h"

using namespace mg;

int main(int argc, char** argv) {
  examples::TrainFlags f;
  int64_t region_len = 128, num_data = 16, vocab = 16, final_seqs = 1024;
  f.batch = 32;
  f.lr = 3e-3;
  f.min_lr = 1e-4;
  f.schedule = "cosine";
  f.warmup = 100;
  f.steps = 6000;
  f.eval_every = 100;
  f.eval_batches = 8;
  f.target_acc = 99.5;
  if (examples::has_switch(argc, argv, "--paper")) {  // P App. E.1 (see the header comment)
    region_len = 4080;
    f.batch = 64;
    f.lr = 1e-4;
    f.min_lr = 0;
    f.schedule = "constant";
    f.warmup = 0;
    f.steps = 400000;
    f.eval_every = 2000;
    f.target_acc = 0;
    f.ckpt_every = 5000;
  }

  examples::Cli cli("selective_copying",
                    "Trains a Mamba LM on the paper's Selective Copying task and reports the accuracy "
                    "over the answer tokens.");
  cli.section("task");
  cli.add("--region-len", &region_len, "length of the noisy region (paper: 4080, so L = 4096)", {.min = 1, .max = 1 << 24});
  cli.add("--num-data", &num_data, "data tokens to copy (paper: 16)", {.min = 1, .max = 1 << 20});
  cli.add("--vocab", &vocab, "vocabulary incl. noise (0) and delimiter (V-1) (paper: 16)", {.min = 3, .max = 1 << 20});
  cli.add("--final-seqs", &final_seqs, "held-out sequences scored at the end", {.min = 0});
  examples::add_train_flags(cli, f);
  if (!cli.parse(argc, argv)) return cli.exit_code();
  if (int rc = examples::check_train_flags(cli, f)) return rc;
  if (region_len < num_data)
    return cli.error("--region-len " + std::to_string(region_len),
                     "must be at least --num-data " + std::to_string(num_data) + " (the data tokens lie in the region)");

  return examples::run_main("selective_copying", [&] {
    auto t_program = examples::Clock::now();
    data::SelectiveCopyingConfig task_cfg;
    task_cfg.region_len = region_len;
    task_cfg.num_data = num_data;
    task_cfg.vocab_size = (int32_t)vocab;
    task_cfg.validate();
    const int64_t T = task_cfg.seq_len();
    const int64_t eval_batch = f.eval_batch_size();
    auto make = [&](int64_t n, Generator& gen) { return data::selective_copying_batch(task_cfg, n, gen); };

    // Data streams 1 (training) and 2 (the periodic held-out set), see SyntheticRun.
    examples::SyntheticRun run(
        "selective_copying", f, vocab, /*first_stream=*/1, make,
        examples::strf("selective copying: L = %lld (region %lld + %lld answers), V = %lld%s", (long long)T,
                       (long long)region_len, (long long)num_data, (long long)vocab,
                       f.paper ? " — paper configuration" : ""));
    const train::TrainResult& r = run.train(
        cli, T, {{"task", "selective_copying"}, {"region_len", std::to_string(region_len)},
                 {"num_data", std::to_string(num_data)}, {"vocab", std::to_string(vocab)}},
        /*one_answer=*/false);
    if (r.interrupted) return run.exit_after_signal();
    if (!examples::lead_rank()) return 0;  // [data parallel] rank 0 scores and prints

    // Final score on a larger held-out set (stream 3), disjoint from the periodic one.
    Generator final_gen = run.stream(3);
    std::vector<data::SyntheticBatch> final_set;
    for (int64_t n = 0; n < final_seqs; n += eval_batch)
      final_set.push_back(make(std::min(eval_batch, final_seqs - n), final_gen));
    examples::EvalResult fin = examples::score_batches(run.model, final_set);

    std::printf("\n==== selective copying: summary ====\n");
    std::printf("config      L %lld (region %lld, %lld data tokens), V %lld; %s; %lld params\n", (long long)T,
                (long long)region_len, (long long)num_data, (long long)vocab, run.mcfg.str().c_str(),
                (long long)run.model.num_parameters());
    run.print_training_summary();
    std::printf("wall time   training %s, program %s\n", examples::fmt_duration(r.seconds).c_str(),
                examples::fmt_duration(examples::seconds_since(t_program)).c_str());
    std::printf("accuracy    %.2f%% of %lld answer tokens (%lld sequences; %.1f%% sequences all correct; "
                "answer loss %.4f)\n", 100.0 * fin.score.accuracy(), (long long)fin.score.answers,
                (long long)fin.score.sequences, 100.0 * fin.score.exact_match_rate(), fin.loss);
    std::printf("paper       Mamba (S6) 99.8%% at L 4096 after 400K steps\n");
    return 0;
  });
}
