// data/synthetic.h — the paper's two synthetic tasks (Mamba §4.1, App. E.1), generated fresh
// from a seeded mg::Generator. Every batch is a pure function of (config, batch size, the
// generator's seed and offset), and each sequence consumes a fixed number of draws, so saving
// the generator's offset resumes the exact data stream.
//
// Targets are aligned with the inputs (no shift): targets[b, t] is what the model must output
// at position t, -100 (ignore) everywhere except the answer positions, which is what
// MambaLM::loss(ids, targets) and cross_entropy(..., ignore_index = -100) expect.
//
// ---- Selective Copying (§4.1.1): V = 16 tokens including the noise token -------------------
//   id 0          noise (the "white" token of the paper's Figure 2)
//   ids 1..V-2    data values (1..14 for V = 16)
//   id V-1        delimiter: "now copy" (15 for V = 16)
// One sequence of T = region_len + num_data positions:
//   [0, region_len)            noise, except num_data positions (distinct, uniformly random,
//                              sorted) holding data values d_0..d_{M-1} (each uniform in 1..V-2,
//                              repeats allowed); targets -100
//   [region_len, T)            the delimiter run: input V-1 at every position; these are the
//                              answer positions: targets[region_len + i] = d_i (in order)
// The model sees no answer token (no teacher forcing): at the i-th delimiter it must output the
// i-th data token. Paper setting: T = 4096 (region_len = 4080), num_data = 16, V = 16,
// 2 layers, D = 64, batch 64, constant LR 1e-4; reported accuracy 99.8% (answer tokens).
// Draws per sequence: num_data (positions, Floyd's sampling) + num_data (values).
//
// ---- Induction Heads (§4.1.2): V = 16 tokens including the trigger ---------------------------
//   ids 0..V-2    ordinary tokens (uniform random)
//   id V-1        the trigger (15 for V = 16); it occurs exactly twice
// One sequence of T = seq_len positions (T >= 3):
//   position p (uniform in [0, T-3])   the trigger
//   position p + 1                     X, an ordinary token
//   position T - 1                     the trigger again (the last input)
//   every other position               an ordinary token
//   targets: -100 except targets[T-1] = X  (after the second trigger, recall what followed the first)
// Paper setting: train at T = 256, evaluate at 2^6 .. 2^20; 2 layers, D = 64, batch 8, Adam
// without weight decay, constant LR 1e-3. Draws per sequence: 1 (p) + T (tokens).
//
// ---- Scoring ------------------------------------------------------------------------------
// score_answers(logits (B, T, V'), targets (B, T)) counts, over the positions whose target is
// not ignore_index, those where argmax over V' (any V' >= the task's V, e.g. the model's padded
// vocabulary; ties go to the lowest id) equals the target, and the sequences whose answers are
// all correct. accuracy = correct / answers; exact_match_rate = sequences all correct / B.
#pragma once
#include <cstdint>

#include "core/rng.h"
#include "core/tensor.h"

namespace mg::data {

struct SyntheticBatch {
  Tensor inputs;   // (B, T) i32
  Tensor targets;  // (B, T) i32, -100 except at the answer positions
};

struct SelectiveCopyingConfig {
  int64_t region_len = 4080;  // the noisy region holding the data tokens
  int64_t num_data = 16;      // data tokens to memorise (M)
  int32_t vocab_size = 16;    // V, including noise (0) and delimiter (V-1); >= 3
  int64_t seq_len() const { return region_len + num_data; }  // T
  int32_t noise_id() const { return 0; }
  int32_t delimiter_id() const { return vocab_size - 1; }
  void validate() const;  // throws mg::Error naming the bad field
};

struct InductionHeadsConfig {
  int64_t seq_len = 256;    // T, >= 3
  int32_t vocab_size = 16;  // V, including the trigger (V-1); >= 3
  int32_t trigger_id() const { return vocab_size - 1; }
  void validate() const;
};

SyntheticBatch selective_copying_batch(const SelectiveCopyingConfig& cfg, int64_t batch,
                                       Generator& gen);
SyntheticBatch induction_heads_batch(const InductionHeadsConfig& cfg, int64_t batch,
                                     Generator& gen);

struct AnswerScore {
  int64_t correct = 0;       // answer positions predicted exactly
  int64_t answers = 0;       // answer positions (targets != ignore_index)
  int64_t sequences_all_correct = 0;
  int64_t sequences = 0;
  double accuracy() const { return answers ? double(correct) / double(answers) : 0.0; }
  double exact_match_rate() const {
    return sequences ? double(sequences_all_correct) / double(sequences) : 0.0;
  }
  AnswerScore& operator+=(const AnswerScore& o);  // aggregate over batches
};

// logits (B, T, V') f32/f64 on any device, targets (B, T) i32.
AnswerScore score_answers(const Tensor& logits, const Tensor& targets, int32_t ignore_index = -100);
double accuracy(const Tensor& logits, const Tensor& targets, int32_t ignore_index = -100);
double exact_match_rate(const Tensor& logits, const Tensor& targets, int32_t ignore_index = -100);

}  // namespace mg::data
