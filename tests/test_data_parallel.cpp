// Data parallel without mpirun: sharding, the single-process communicator, gradient buckets
// (through a fake two-rank communicator), checkpoint state and re-sharding on resume. The
// real multi-process runs are tests/dist/test_distributed.cpp (CTest runs them under mpirun).
#include <doctest/doctest.h>

#include <filesystem>

#include "ops/shape.h"
#include "train/data_parallel.h"
#include "train/distributed.h"
#include "train/run_checkpoint.h"
#include "train/trainer.h"

using namespace mg;
namespace fs = std::filesystem;

namespace {

// Rank 0 of two, where "rank 1" always holds this rank's values + 1: a sum gives 2x + 1 and a
// mean x + 0.5, element by element, so a misplaced element shows.
class FakePair final : public dist::Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 2; }
  bool distributed() const override { return true; }
  std::string backend() const override { return "fake pair"; }
  void all_reduce(std::span<const dist::Buffer> buffers, dist::ReduceOp op, const std::string&) override {
    ++reduce_calls;
    for (const dist::Buffer& b : buffers) {
      buffers_seen.push_back(b.n);
      auto f = [&](auto* p) {
        for (int64_t i = 0; i < b.n; ++i) p[i] = op == dist::ReduceOp::mean ? p[i] + 0.5 : 2 * p[i] + 1;
      };
      if (b.dtype == DType::f32) f(static_cast<float*>(b.data));
      else f(static_cast<double*>(b.data));
    }
  }
  void broadcast(const dist::Buffer&, int, const std::string&) override {}
  std::vector<std::string> all_gather(const std::string& mine, const std::string&) override {
    return {mine, mine};
  }
  void barrier(const std::string&) override {}
  [[noreturn]] void abort_job(int) override { throw Error("abort"); }
  int reduce_calls = 0;
  std::vector<int64_t> buffers_seen;
};

std::vector<nn::NamedParam> params_with_grads(const std::vector<int64_t>& sizes) {
  std::vector<nn::NamedParam> ps;
  for (size_t k = 0; k < sizes.size(); ++k) {
    Tensor p = Tensor::zeros({sizes[k]});
    p.requires_grad_();
    std::vector<float> g(sizes[k]);
    for (int64_t i = 0; i < sizes[k]; ++i) g[i] = float(100 * k + i);
    p.set_grad(Tensor::from_vector(g, {sizes[k]}));
    ps.push_back({"p" + std::to_string(k), p, {}});
  }
  return ps;
}

}  // namespace

TEST_CASE("data parallel: shard_rows cuts a global batch into equal row blocks") {
  Tensor g = reshape(Tensor::arange(0, 12, DType::i32), {6, 2});
  CHECK(train::shard_rows(g, 1, 3).to_vector<int32_t>() == std::vector<int32_t>{4, 5, 6, 7});
  CHECK(train::shard_rows(g, 2, 3).to_vector<int32_t>() == std::vector<int32_t>{8, 9, 10, 11});
  CHECK(train::shard_rows(g, 0, 1).same(g));
  CHECK_THROWS_WITH_AS(train::shard_rows(g, 0, 4), doctest::Contains("does not split into 4"), Error);
}

TEST_CASE("data parallel: the single process is rank 0 of 1 and its collectives are the identity") {
  dist::Communicator& c = dist::single_process();
  CHECK(c.rank() == 0);
  CHECK(c.size() == 1);
  CHECK_FALSE(c.distributed());
  double v[2] = {1.5, -2};
  c.all_reduce(v, 2, dist::ReduceOp::mean, "test");
  CHECK(v[0] == 1.5);
  CHECK(v[1] == -2);
  CHECK(c.broadcast_string("hello", 0, "test") == "hello");
  CHECK(c.all_gather("x", "test") == std::vector<std::string>{"x"});
  CHECK(c.any(true, "test"));
  CHECK_FALSE(c.any(false, "test"));
  // Without mpirun's variables the process's world is the single process too (ctest runs
  // mg_tests without a launcher).
  CHECK_FALSE(dist::world().distributed());
}

TEST_CASE("data parallel: gradients travel in buckets and come back averaged, element by element") {
  // 5 f32 grads: 3, 4, 40 (160 bytes: alone, in place), 2, 5 elements; buckets of 32 bytes.
  auto ps = params_with_grads({3, 4, 40, 2, 5});
  FakePair pair;
  train::DataParallel dp(pair, ps, /*bucket_bytes=*/32);
  std::vector<std::vector<float>> orig;
  for (auto& p : ps) orig.push_back(p.tensor.grad().to_vector<float>());
  auto sync = dp.synchronize(/*loss sum*/ 3.0, /*interrupted*/ false, 1);
  CHECK(sync.loss_sum == doctest::Approx((3.0 + 4.0) / 2));  // (x + (x + 1)) / 2 ranks
  CHECK(sync.interrupted);  // "rank 1" had 0 + 1
  CHECK(pair.reduce_calls == 2);  // the small f64 exchange, then one group of buckets
  // bucket {3,4} (7 floats = 28 bytes), bucket {2,5} (7), and the 40 in place.
  CHECK(pair.buffers_seen == std::vector<int64_t>{2 + 5, 40, 7, 7});
  for (size_t k = 0; k < ps.size(); ++k) {
    auto g = ps[k].tensor.grad().to_vector<float>();
    for (size_t i = 0; i < g.size(); ++i) CHECK(g[i] == orig[k][i] + 0.5f);
  }
}

TEST_CASE("data parallel: a gradient another rank has is zero-filled here, so the buckets match") {
  auto ps = params_with_grads({3, 2});
  ps[1].tensor.zero_grad();  // this rank never reached p1 ("rank 1" did: its flag is 0 + 1)
  FakePair pair;
  train::DataParallel dp(pair, ps);
  dp.synchronize(0.0, false, 1);
  REQUIRE(ps[1].tensor.grad().defined());
  CHECK(ps[1].tensor.grad().to_vector<float>() == std::vector<float>{0.5f, 0.5f});
}

TEST_CASE("data parallel: checkpoints record every rank's state; resume re-shards equal states") {
  FakePair pair;
  auto ps = params_with_grads({2});
  train::DataParallel dp(pair, ps);
  auto st = dp.checkpoint_state({{"offset", 48}}, 512);
  CHECK(st == std::map<std::string, uint64_t>{{"world_size", 2}, {"tokens_per_step", 512},
                                              {"rank0.offset", 48}, {"rank1.offset", 48}});

  // A 3-rank checkpoint with equal states, resumed by 2 ranks: rank 0's state and a note.
  train::AdamW opt(ps);
  int64_t step = 7;
  std::map<std::string, uint64_t> three{{"world_size", 3}, {"tokens_per_step", 768},
                                        {"rank0.offset", 96}, {"rank1.offset", 96}, {"rank2.offset", 96}};
  auto r = dp.resume(opt, &step, {{"offset", 96}}, three, 512);
  CHECK(r.task_state == std::map<std::string, uint64_t>{{"offset", 96}});
  CHECK(r.note.find("written by 3 rank(s), this run has 2") != std::string::npos);
  CHECK(r.note.find("changes from 768 to 512 tokens per step") != std::string::npos);
  CHECK(step == 7);

  // Same world size: each rank its own state (rank 0 here).
  std::map<std::string, uint64_t> two{{"world_size", 2}, {"rank0.offset", 5}, {"rank1.offset", 9}};
  r = dp.resume(opt, &step, {{"offset", 5}}, two, 512);
  CHECK(r.task_state == std::map<std::string, uint64_t>{{"offset", 5}});
  CHECK(r.note.empty());

  // Another world size with states that differ: refused, saying how to resume.
  three["rank2.offset"] = 97;
  CHECK_THROWS_WITH_AS(dp.resume(opt, &step, {{"offset", 96}}, three, 512),
                       doctest::Contains("resume with mpirun -np 3"), Error);
}

TEST_CASE("data parallel: the run checkpoint keeps the dist state (metadata dist.*)") {
  fs::path d = fs::temp_directory_path() / ("mg_dp_ckpt_" + std::to_string(::getpid()));
  fs::remove_all(d);
  nn::MambaConfig c;
  c.d_model = 8;
  c.n_layer = 1;
  c.vocab_size = 16;
  c.d_state = 2;
  nn::MambaLM m(c, 1);
  train::AdamW opt(m.named_parameters());
  train::RunState st{3, {{"cursor", 11}}, "run-a", {{"world_size", 2}, {"rank1.cursor", 11}}};
  std::string dir = train::save_run_checkpoint(d.string(), m, opt, st, 2);
  train::RunState back = train::load_run_checkpoint(dir, m, opt);
  CHECK(back.step == 3);
  CHECK(back.task_state == st.task_state);
  CHECK(back.dist_state == st.dist_state);
  CHECK(back.run_id == "run-a");
  fs::remove_all(d);
}
