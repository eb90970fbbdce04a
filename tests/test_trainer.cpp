// The training loop: exact resume, Ctrl-C, early stop, the non-finite guard, checkpoint retention.
#include <doctest/doctest.h>

#include <csignal>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "autograd/tape.h"
#include "ops/arith.h"
#include "ops/unary.h"
#include "train/trainer.h"
#include "test_util.h"

using namespace mg;
namespace fs = std::filesystem;

namespace {

nn::MambaConfig tiny_config() { return test::tiny_lm_config(/*V=*/20, /*N=*/4); }

// Random token windows from a seeded generator: the generator's offset is the task state.
struct ToyTask {
  Generator gen{7};
  train::TrainTask task() {
    train::TrainTask t;
    t.tokens_per_micro_batch = 2 * 9;
    t.micro_batch_loss = [this](const nn::MambaLM& m) {
      std::vector<int32_t> ids(2 * 10);
      for (auto& v : ids) v = (int32_t)gen.next_below(20);
      return m.loss(Tensor::from_vector(ids, {2, 10}));
    };
    t.save_state = [this] { return std::map<std::string, uint64_t>{{"seed", gen.seed()}, {"offset", gen.offset()}}; };
    t.load_state = [this](const std::map<std::string, uint64_t>& s) { gen.set_state(s.at("seed"), s.at("offset")); };
    return t;
  }
};

// `steps` to run now; the schedule spans `planned` steps (a run stopped early and resumed
// keeps the schedule of the whole run).
train::TrainConfig base_config(const std::string& dir, int64_t steps, int64_t planned = 0) {
  if (planned == 0) planned = steps;
  train::TrainConfig c;
  c.steps = steps;
  c.run_dir = dir;
  c.quiet = true;
  c.grad_accum = 2;
  c.schedule = train::LrSchedule::parse("cosine", 3e-3, 3e-4, 2, planned);
  return c;
}

std::string temp_dir(const char* name) {
  fs::path p = fs::temp_directory_path() / (std::string("mg_trainer_") + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  return p.string();
}

bool same_weights(const nn::MambaLM& a, const nn::MambaLM& b) {
  auto pa = a.named_parameters(), pb = b.named_parameters();
  for (size_t i = 0; i < pa.size(); ++i)
    if (std::memcmp(pa[i].tensor.raw_data(), pb[i].tensor.raw_data(), pa[i].tensor.nbytes()) != 0) return false;
  return true;
}

}  // namespace

TEST_CASE("trainer: 2N steps == N steps + resume + N steps, bitwise (losses and weights)") {
  const int64_t N = 4;
  std::string d1 = temp_dir("straight"), d2 = temp_dir("resumed");
  nn::MambaLM straight(tiny_config(), 1);
  ToyTask t1;
  auto task1 = t1.task();
  auto r1 = train::train(straight, base_config(d1, 2 * N), task1);
  REQUIRE(r1.losses.size() == 2 * N);

  nn::MambaLM first(tiny_config(), 1);
  ToyTask t2;
  auto task2 = t2.task();
  auto r2a = train::train(first, base_config(d2, N, 2 * N), task2);
  // A fresh process would start here: new model (other init seed), new task state.
  nn::MambaLM resumed(tiny_config(), 999);
  ToyTask t3;
  t3.gen.set_state(123, 456);
  auto task3 = t3.task();
  auto cfg = base_config(d2, 2 * N);
  cfg.resume = "latest";
  auto r2b = train::train(resumed, cfg, task3);
  CHECK(r2b.first_step == N);
  std::vector<double> joined = r2a.losses;
  joined.insert(joined.end(), r2b.losses.begin(), r2b.losses.end());
  REQUIRE(joined.size() == r1.losses.size());
  for (size_t i = 0; i < joined.size(); ++i) CHECK(joined[i] == r1.losses[i]);  // bitwise
  CHECK(same_weights(straight, resumed));
  CHECK(r1.losses.back() < r1.losses.front());
  fs::remove_all(d1);
  fs::remove_all(d2);
}

TEST_CASE("trainer: Ctrl-C saves a checkpoint and returns") {
  std::string d = temp_dir("sigint");
  nn::MambaLM m(tiny_config(), 1);
  ToyTask t;
  auto task = t.task();
  int calls = 0;
  auto inner = task.micro_batch_loss;
  task.micro_batch_loss = [&](const nn::MambaLM& model) {
    if (++calls == 5) std::raise(SIGINT);  // during step 3 (2 micro-batches per step)
    return inner(model);
  };
  auto r = train::train(m, base_config(d, 100), task);
  CHECK(r.interrupted);
  CHECK(r.steps_done == 3);
  CHECK(train::latest_checkpoint(d) == (fs::path(d) / "ckpt-000003").string());
  CHECK(fs::exists(fs::path(d) / "ckpt-000003" / "model.safetensors"));
  fs::remove_all(d);
}

TEST_CASE("trainer: should_stop ends training after an evaluation and saves a checkpoint") {
  std::string d = temp_dir("early");
  nn::MambaLM m(tiny_config(), 1);
  ToyTask t;
  auto task = t.task();
  int evals = 0;
  task.evaluate = [&](const nn::MambaLM&) {
    ++evals;
    return std::map<std::string, double>{{"evals", double(evals)}};
  };
  std::vector<double> asked;  // the metrics should_stop saw
  task.should_stop = [&](const std::map<std::string, double>& e) {
    asked.push_back(e.at("evals"));
    return e.at("evals") >= 3;  // the third evaluation, after step 6
  };
  auto c = base_config(d, 100);
  c.eval_every = 2;
  auto r = train::train(m, c, task);
  CHECK(r.stopped_early);
  CHECK(!r.interrupted);
  CHECK(r.steps_done == 6);
  CHECK(evals == 3);  // no extra final evaluation: the weights were just evaluated
  CHECK(asked == std::vector<double>{1, 2, 3});
  CHECK(r.last_eval.at("evals") == 3);
  CHECK(train::latest_checkpoint(d) == (fs::path(d) / "ckpt-000006").string());
  fs::remove_all(d);
}

TEST_CASE("trainer: non-finite losses are skipped, then training stops; no checkpoint during the streak") {
  std::string d = temp_dir("nan");
  nn::MambaLM m(tiny_config(), 1);
  ToyTask t;
  auto task = t.task();
  auto inner = task.micro_batch_loss;
  int64_t step_calls = 0;
  task.micro_batch_loss = [&](const nn::MambaLM& model) {
    Tensor l = inner(model);
    return ++step_calls > 4 ? mul(l, NAN) : l;  // steps 1-2 fine, then NaN forever
  };
  auto cfg = base_config(d, 20);
  cfg.ckpt_every = 1;
  cfg.max_nonfinite = 3;
  auto before = m.named_parameters()[0].tensor.clone();
  const std::string good = (fs::path(d) / "ckpt-000002").string();
  CHECK_THROWS_WITH_AS(train::train(m, cfg, task),
                       doctest::Contains("3 consecutive steps with non-finite values. The first "
                                         "was step 3: the loss ("), Error);
  CHECK_THROWS_WITH_AS(train::train(m, [&] { auto c = cfg; c.resume = "latest"; return c; }(), task),
                       doctest::Contains(("The last good checkpoint is " + good).c_str()), Error);
  // Steps 3 and 4 (skipped) were not saved: `latest` still names the last healthy step.
  CHECK(train::latest_checkpoint(d) == good);
  CHECK(!fs::exists(fs::path(d) / "ckpt-000003"));
  CHECK(!fs::exists(fs::path(d) / "ckpt-000004"));
  // Skipped steps changed nothing: the weights are those after step 2, all finite.
  CHECK(m.named_parameters()[0].tensor.to_vector<float>() != before.to_vector<float>());
  auto w = m.named_parameters()[0].tensor.to_vector<float>();
  for (float v : w) CHECK(std::isfinite(v));
  fs::remove_all(d);
}

TEST_CASE("trainer: keeps only the newest keep_last checkpoints") {
  std::string d = temp_dir("keep");
  nn::MambaLM m(tiny_config(), 1);
  ToyTask t;
  auto task = t.task();
  auto cfg = base_config(d, 5);
  cfg.ckpt_every = 1;
  cfg.keep_last = 2;
  train::train(m, cfg, task);
  int n = 0;
  for (auto& e : fs::directory_iterator(d)) n += e.path().filename().string().rfind("ckpt-", 0) == 0;
  CHECK(n == 2);
  CHECK(fs::exists(fs::path(d) / "ckpt-000005"));
  CHECK(fs::exists(fs::path(d) / "ckpt-000004"));
  CHECK(fs::exists(fs::path(d) / "log.jsonl"));
  fs::remove_all(d);
}

TEST_CASE("trainer: nodes the task records outside the loss's graph are dropped each step") {
  // backward(loss) consumes only the loss's graph; a side value computed with grad on (here
  // an exp of the loss, never differentiated) would otherwise pile up on the tape every step.
  tape().clear();  // this test counts nodes from an empty tape
  nn::MambaLM model(tiny_config(), 3);
  ToyTask toy;
  train::TrainTask t = toy.task();
  auto inner = t.micro_batch_loss;
  int64_t side_nodes = 0;
  t.micro_batch_loss = [&](const nn::MambaLM& m) {
    Tensor loss = inner(m);
    Tensor side = exp(loss * 2.0);  // two nodes the loss does not depend on
    side_nodes += 2;
    return loss;
  };
  train::TrainConfig cfg = base_config("", 3);
  cfg.run_dir.clear();
  train::train(model, cfg, t);
  CHECK(side_nodes == 3 * 2 * 2);  // 3 steps x grad_accum 2 x 2 nodes
  CHECK(tape().size() == 0);
}
