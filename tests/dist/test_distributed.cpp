// tests/dist/test_distributed.cpp — data-parallel training, run by CTest under mpirun
// (tests/CMakeLists.txt): `mpirun -np N test_distributed <scenario>`. Exit code 0 = pass.
//
//   equal    W ranks with batch b each == one process with batch b W, same data: losses within
//            a relative 1e-6 at each of 20 steps (grad-accum 2), parameters bitwise equal on
//            every rank after every step; a rank with another model is an error on every rank.
//   resume   2 ranks: 10 steps + resume + 10 steps == 20 steps, bitwise (losses, weights, on
//            every rank); the step-10 checkpoint resumed by ONE process with batch 2b continues
//            the same global stream (losses within 1e-6).
//   die      rank 1 is killed (SIGKILL) during step 3: the job must end (CTest checks mpirun's
//            message naming rank 1, and the time limit).
//   hang     rank 1 stops answering during step 3 (MG_DIST_TIMEOUT=3): the other ranks must
//            abort the job naming rank 1 (CTest checks the message).
// Each rank prints its failures on stderr prefixed with its rank.
#include <unistd.h>

#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>

#include "train/data_parallel.h"
#include "train/distributed.h"
#include "train/trainer.h"

using namespace mg;
namespace fs = std::filesystem;

namespace {

int g_failures = 0;
int g_rank = 0;

#define EXPECT(cond, ...)                                                            \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      ++g_failures;                                                                  \
      std::fprintf(stderr, "rank %d: FAILED %s:%d: %s: %s\n", g_rank, __FILE__, __LINE__, #cond, \
                   detail::cat(__VA_ARGS__).c_str());                                \
    }                                                                                \
  } while (0)

constexpr int64_t kB = 2, kL = 10, kV = 20;

nn::MambaConfig tiny_config(int64_t d_model = 16) {
  nn::MambaConfig c;
  c.d_model = d_model;
  c.n_layer = 2;
  c.vocab_size = kV;
  c.d_state = 4;
  return c;
}

// Random token windows: one generator draws the GLOBAL micro-batch (rows_per_rank x world rows);
// this rank keeps its rows. One process with rows_per_rank = b W sees the same tokens.
struct Task {
  Generator gen{7};
  int64_t rows_per_rank = kB;
  int rank = 0, world = 1;
  std::function<void(int64_t)> on_micro_batch;  // called with the micro-batch's index
  int64_t calls = 0;

  train::TrainTask task() {
    train::TrainTask t;
    t.tokens_per_micro_batch = rows_per_rank * kL;
    t.sequences_per_micro_batch = rows_per_rank;
    t.micro_batch_loss = [this](const nn::MambaLM& m) {
      if (on_micro_batch) on_micro_batch(calls);
      ++calls;
      const int64_t rows = rows_per_rank * world;
      std::vector<int32_t> ids(rows * (kL + 1));
      for (auto& v : ids) v = (int32_t)gen.next_below(kV);
      Tensor global = Tensor::from_vector(ids, {rows, kL + 1});
      return m.loss(train::shard_rows(global, rank, world));
    };
    t.save_state = [this] { return std::map<std::string, uint64_t>{{"seed", gen.seed()}, {"offset", gen.offset()}}; };
    t.load_state = [this](const std::map<std::string, uint64_t>& s) { gen.set_state(s.at("seed"), s.at("offset")); };
    return t;
  }
};

train::TrainConfig config(const std::string& dir, int64_t steps, int64_t planned, dist::Communicator* comm) {
  train::TrainConfig c;
  c.steps = steps;
  c.run_dir = dir;
  c.quiet = true;
  c.grad_accum = 2;
  c.handle_sigint = false;
  c.keep_last = 10;
  c.schedule = train::LrSchedule::parse("cosine", 3e-3, 3e-4, 2, planned);
  c.comm = comm;
  return c;
}

double max_rel(const std::vector<double>& a, const std::vector<double>& b) {
  double m = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i)
    m = std::max(m, std::abs(a[i] - b[i]) / std::max(std::abs(b[i]), 1e-30));
  return m;
}

// ---- equal: W ranks == one process on the same global batch --------------------------------
void scenario_equal(dist::Communicator& w) {
  const int W = w.size();
  const int64_t steps = 20;
  // The reference: one process, batch b W (runs on every rank; it is tiny).
  nn::MambaLM ref(tiny_config(), 1);
  Task rt;
  rt.rows_per_rank = kB * W;
  auto ref_task = rt.task();
  auto ref_res = train::train(ref, config("", steps, steps, &dist::single_process()), ref_task);

  // W ranks, batch b each; rank r > 0 starts from other weights (seed r): the broadcast fixes it.
  nn::MambaLM model(tiny_config(), 1 + 100 * (uint64_t)w.rank());
  train::DataParallel probe(w, model.named_parameters());
  Task dt;
  dt.rank = w.rank();
  dt.world = W;
  int64_t checked = 0;
  dt.on_micro_batch = [&](int64_t k) {  // before each step's first micro-batch: the weights after the last step
    if (k % 2 == 0 && k > 0) {
      probe.check_identical("after step " + std::to_string(k / 2));
      ++checked;
    }
  };
  auto task = dt.task();
  auto res = train::train(model, config("", steps, steps, &w), task);
  probe.check_identical("after the last step");
  EXPECT(checked == steps - 1, "checked ", checked);
  EXPECT(res.losses.size() == (size_t)steps, res.losses.size());
  for (int64_t s = 0; s < steps; ++s) {
    double rel = std::abs(res.losses[s] - ref_res.losses[s]) / std::abs(ref_res.losses[s]);
    EXPECT(rel <= 1e-6, "step ", s + 1, ": ", W, " ranks loss ", res.losses[s], " vs one process ",
           ref_res.losses[s], " (relative ", rel, ")");
  }
  EXPECT(res.losses.back() < res.losses.front(), "training did not reduce the loss");
  // Weights after 20 steps: close to the reference's (float rounding differs: other sums).
  double wmax = 0;
  auto a = model.named_parameters(), b = ref.named_parameters();
  for (size_t i = 0; i < a.size(); ++i) {
    auto va = a[i].tensor.to_vector<float>(), vb = b[i].tensor.to_vector<float>();
    for (size_t j = 0; j < va.size(); ++j) wmax = std::max(wmax, (double)std::abs(va[j] - vb[j]));
  }
  EXPECT(wmax < 1e-4, "weights differ from the one-process run by ", wmax);
  if (w.rank() == 0)
    std::fprintf(stderr, "equal: %d ranks x batch %lld vs 1 process x batch %lld: max relative loss "
                 "difference %.3g over %lld steps, max weight difference %.3g; parameters bitwise "
                 "equal on every rank after every step\n", W, (long long)kB, (long long)(kB * W),
                 max_rel(res.losses, ref_res.losses), (long long)steps, wmax);

  // A rank that builds another model: an error on every rank, naming it (not a hang).
  nn::MambaLM odd(tiny_config(w.rank() == W - 1 ? 8 : 16), 1);
  Task ot;
  ot.rank = w.rank();
  ot.world = W;
  auto otask = ot.task();
  std::string err;
  try {
    train::train(odd, config("", 1, 5, &w), otask);
  } catch (const Error& e) {
    err = e.what();
  }
  EXPECT(err.find("rank " + std::to_string(W - 1) + " builds a different model") != std::string::npos,
         "got '", err, "'");
}

// ---- resume: bitwise with 2 ranks; re-sharded onto one process --------------------------------
void scenario_resume(dist::Communicator& w) {
  const int W = w.size();
  std::string base = w.broadcast_string(
      (fs::temp_directory_path() / ("mg_dist_resume_" + std::to_string(::getpid()))).string(), 0, "dir");
  std::string d_straight = base + "/straight", d_split = base + "/split", d_one = base + "/one";
  const int64_t N = 10;

  nn::MambaLM straight(tiny_config(), 1);
  Task t1;
  t1.rank = w.rank();
  t1.world = W;
  auto task1 = t1.task();
  auto r1 = train::train(straight, config(d_straight, 2 * N, 2 * N, &w), task1);

  nn::MambaLM first(tiny_config(), 1);
  Task t2;
  t2.rank = w.rank();
  t2.world = W;
  auto task2 = t2.task();
  auto r2a = train::train(first, config(d_split, N, 2 * N, &w), task2);
  // "A fresh process": another init, another data state; the checkpoint restores both.
  nn::MambaLM resumed(tiny_config(), 999);
  Task t3;
  t3.rank = w.rank();
  t3.world = W;
  t3.gen.set_state(123, 456);
  auto task3 = t3.task();
  auto cfg = config(d_split, 2 * N, 2 * N, &w);
  cfg.resume = "latest";
  auto r2b = train::train(resumed, cfg, task3);
  EXPECT(r2b.first_step == N, r2b.first_step);
  std::vector<double> joined = r2a.losses;
  joined.insert(joined.end(), r2b.losses.begin(), r2b.losses.end());
  EXPECT(joined.size() == r1.losses.size(), joined.size());
  for (size_t i = 0; i < std::min(joined.size(), r1.losses.size()); ++i)
    EXPECT(joined[i] == r1.losses[i], "step ", i + 1, ": resumed ", joined[i], " vs straight ", r1.losses[i]);
  train::DataParallel a(dist::single_process(), straight.named_parameters());
  train::DataParallel b(dist::single_process(), resumed.named_parameters());
  EXPECT(a.parameter_fingerprint() == b.parameter_fingerprint(), "resumed weights differ from the straight run");
  train::DataParallel(w, resumed.named_parameters()).check_identical("after the resumed run");

  // The step-N checkpoint, resumed by one process with batch b W: the same global stream.
  if (w.rank() == 0) {
    nn::MambaLM one(tiny_config(), 5);
    Task t4;
    t4.rows_per_rank = kB * W;
    auto task4 = t4.task();
    auto c4 = config(d_one, 2 * N, 2 * N, &dist::single_process());
    c4.resume = d_split + "/ckpt-000010";
    auto r4 = train::train(one, c4, task4);
    std::vector<double> tail(r1.losses.begin() + N, r1.losses.end());
    double rel = max_rel(r4.losses, tail);
    EXPECT(r4.losses.size() == (size_t)N && rel <= 1e-6, "re-sharded resume: relative ", rel);
    std::fprintf(stderr, "resume: %d ranks, %lld + %lld steps == %lld steps bitwise; re-sharded onto "
                 "1 process: max relative loss difference %.3g\n", W, (long long)N, (long long)N,
                 (long long)(2 * N), rel);
  }
  w.barrier("the end of the resume scenario");
  if (w.rank() == 0) fs::remove_all(base);
}

// ---- die / hang: rank 1 fails during step 3 --------------------------------------------------
void scenario_fail(dist::Communicator& w, bool kill) {
  nn::MambaLM model(tiny_config(), 1);
  Task t;
  t.rank = w.rank();
  t.world = w.size();
  t.on_micro_batch = [&](int64_t k) {
    if (w.rank() != 1 || k != 4) return;  // step 3's first micro-batch
    std::fprintf(stderr, "rank 1: %s now (step 3)\n", kill ? "killing myself" : "hanging");
    if (kill) std::raise(SIGKILL);
    std::this_thread::sleep_for(std::chrono::seconds(60));
  };
  auto task = t.task();
  train::train(model, config("", 20, 20, &w), task);
  std::fprintf(stderr, "rank %d: FAILED: training finished although rank 1 %s\n", w.rank(),
               kill ? "died" : "hung");
  ++g_failures;
}

}  // namespace

int main(int argc, char** argv) {
  std::string scenario = argc > 1 ? argv[1] : "";
  try {
    dist::Communicator& w = dist::world();
    g_rank = w.rank();
    if (scenario == "equal") scenario_equal(w);
    else if (scenario == "resume") scenario_resume(w);
    else if (scenario == "die") scenario_fail(w, true);
    else if (scenario == "hang") scenario_fail(w, false);
    else {
      std::fprintf(stderr, "usage: mpirun -np N test_distributed equal|resume|die|hang\n");
      return 2;
    }
    // One verdict for the job: every rank's failures count.
    bool failed = w.any(g_failures > 0, "the verdict");
    if (w.rank() == 0) std::fprintf(stderr, "%s: %s (%d ranks, %s)\n", scenario.c_str(),
                                    failed ? "FAILED" : "passed", w.size(), w.backend().c_str());
    return failed ? 1 : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: FAILED with an exception: %s\n", g_rank, e.what());
    dist::abort_job_on_error();
    return 1;
  }
}
