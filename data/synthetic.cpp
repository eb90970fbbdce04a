#include "data/synthetic.h"

#include <algorithm>
#include <set>
#include <vector>

#include "core/dispatch.h"

namespace mg::data {

void SelectiveCopyingConfig::validate() const {
  MG_CHECK(vocab_size >= 3, "selective_copying: vocab_size must be >= 3 (noise, delimiter and at "
           "least one data value), got ", vocab_size);
  MG_CHECK(num_data >= 1, "selective_copying: num_data must be >= 1, got ", num_data);
  MG_CHECK(region_len >= num_data, "selective_copying: region_len (", region_len,
           ") must hold num_data (", num_data, ") distinct positions");
}

void InductionHeadsConfig::validate() const {
  MG_CHECK(vocab_size >= 3, "induction_heads: vocab_size must be >= 3, got ", vocab_size);
  MG_CHECK(seq_len >= 3, "induction_heads: seq_len must be >= 3 (trigger, X, trigger), got ",
           seq_len);
}

SyntheticBatch selective_copying_batch(const SelectiveCopyingConfig& cfg, int64_t batch,
                                       Generator& gen) {
  cfg.validate();
  MG_CHECK(batch > 0, "selective_copying_batch: batch must be > 0, got ", batch);
  const int64_t L = cfg.region_len, M = cfg.num_data, T = cfg.seq_len();
  const uint64_t num_values = (uint64_t)cfg.vocab_size - 2;  // data ids 1..V-2
  Tensor inputs = Tensor::full({batch, T}, cfg.noise_id(), DType::i32);
  Tensor targets = Tensor::full({batch, T}, -100, DType::i32);
  int32_t* in = inputs.data<int32_t>();
  int32_t* tg = targets.data<int32_t>();
  for (int64_t b = 0; b < batch; ++b) {
    // Floyd's sampling: M distinct positions of [0, L) with exactly M draws.
    std::set<int64_t> chosen;
    for (int64_t j = L - M; j < L; ++j) {
      int64_t t = (int64_t)gen.next_below((uint64_t)j + 1);
      chosen.insert(chosen.count(t) ? j : t);
    }
    int64_t i = 0;
    for (int64_t pos : chosen) {  // std::set iterates in sorted order
      int32_t value = 1 + (int32_t)gen.next_below(num_values);
      in[b * T + pos] = value;
      in[b * T + L + i] = cfg.delimiter_id();
      tg[b * T + L + i] = value;
      ++i;
    }
  }
  return {inputs, targets};
}

SyntheticBatch induction_heads_batch(const InductionHeadsConfig& cfg, int64_t batch,
                                     Generator& gen) {
  cfg.validate();
  MG_CHECK(batch > 0, "induction_heads_batch: batch must be > 0, got ", batch);
  const int64_t T = cfg.seq_len;
  const uint64_t num_ordinary = (uint64_t)cfg.vocab_size - 1;  // ids 0..V-2
  Tensor inputs = Tensor::empty({batch, T}, DType::i32);
  Tensor targets = Tensor::full({batch, T}, -100, DType::i32);
  int32_t* in = inputs.data<int32_t>();
  int32_t* tg = targets.data<int32_t>();
  for (int64_t b = 0; b < batch; ++b) {
    int32_t* seq = in + b * T;
    const int64_t p = (int64_t)gen.next_below((uint64_t)T - 2);  // first trigger in [0, T-3]
    for (int64_t t = 0; t < T; ++t) seq[t] = (int32_t)gen.next_below(num_ordinary);
    seq[p] = cfg.trigger_id();
    seq[T - 1] = cfg.trigger_id();
    tg[b * T + T - 1] = seq[p + 1];  // X: ordinary, since p + 1 <= T - 2
  }
  return {inputs, targets};
}

AnswerScore& AnswerScore::operator+=(const AnswerScore& o) {
  correct += o.correct;
  answers += o.answers;
  sequences_all_correct += o.sequences_all_correct;
  sequences += o.sequences;
  return *this;
}

AnswerScore score_answers(const Tensor& logits_in, const Tensor& targets_in, int32_t ignore_index) {
  const char* op = "score_answers";
  check_defined(op, logits_in, "logits");
  check_defined(op, targets_in, "targets");
  check_float(op, logits_in, "logits");
  check_dtype(op, targets_in, DType::i32, "targets");
  check_dim(op, logits_in, 3, "logits");
  check_dim(op, targets_in, 2, "targets");
  const int64_t B = logits_in.size(0), T = logits_in.size(1), V = logits_in.size(2);
  MG_CHECK(targets_in.size(0) == B && targets_in.size(1) == T, op, ": logits ",
           shape_str(logits_in.shape()), " and targets ", shape_str(targets_in.shape()),
           " disagree on (B, T)");
  Tensor logits = logits_in.copy_to(Device::cpu());
  std::vector<int32_t> targets = targets_in.to_vector<int32_t>();
  AnswerScore s;
  s.sequences = B;
  dispatch_float(logits.dtype(), op, [&]<typename Tv>() {
    const Tv* lg = logits.data<Tv>();
    for (int64_t b = 0; b < B; ++b) {
      bool all_correct = true;
      for (int64_t t = 0; t < T; ++t) {
        int32_t want = targets[b * T + t];
        if (want == ignore_index) continue;
        MG_CHECK(want >= 0 && want < V, op, ": target ", want, " at (", b, ", ", t,
                 ") is outside the vocabulary [0, ", V, ")");
        const Tv* row = lg + (b * T + t) * V;
        int64_t best = std::max_element(row, row + V) - row;  // first maximum
        ++s.answers;
        if (best == want) ++s.correct;
        else all_correct = false;
      }
      if (all_correct) ++s.sequences_all_correct;
    }
  });
  return s;
}

double accuracy(const Tensor& logits, const Tensor& targets, int32_t ignore_index) {
  return score_answers(logits, targets, ignore_index).accuracy();
}

double exact_match_rate(const Tensor& logits, const Tensor& targets, int32_t ignore_index) {
  return score_answers(logits, targets, ignore_index).exact_match_rate();
}

}  // namespace mg::data
