#include "train/distributed.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "core/allocator.h"
#include "core/error.h"

namespace mg::dist {

// ---- conveniences ------------------------------------------------------------------------------

void Communicator::all_reduce(double* data, int64_t n, ReduceOp op, const std::string& what) {
  Buffer b{data, n, DType::f64, Device::cpu()};
  all_reduce(std::span<const Buffer>(&b, 1), op, what);
}

std::string Communicator::broadcast_string(const std::string& s, int root, const std::string& what) {
  double len = rank() == root ? (double)s.size() : 0;  // exact: strings are far below 2^53
  broadcast(Buffer{&len, 1, DType::f64, Device::cpu()}, root, what);
  std::string out = rank() == root ? s : std::string((size_t)len, '\0');
  if (len > 0) {
    // Sent as i32 words (every backend moves those): pad to a multiple of 4 bytes.
    std::vector<int32_t> words(((size_t)len + 3) / 4, 0);
    if (rank() == root) std::memcpy(words.data(), s.data(), s.size());
    broadcast(Buffer{words.data(), (int64_t)words.size(), DType::i32, Device::cpu()}, root, what);
    std::memcpy(out.data(), words.data(), (size_t)len);
  }
  return out;
}

bool Communicator::any(bool flag, const std::string& what) {
  double v = flag ? 1.0 : 0.0;
  all_reduce(&v, 1, ReduceOp::max, what);
  return v > 0;
}

std::string Communicator::who() const {
  return "rank " + std::to_string(rank()) + " of " + std::to_string(size());
}

namespace detail {
int64_t element_size(DType t) { return (int64_t)dtype_size(t); }

void copy_device_to_host(void* host, const Buffer& b) {
  allocator_for(b.device).copy_to_host(host, b.data, (size_t)(b.n * element_size(b.dtype)));
}
void copy_host_to_device(const Buffer& b, const void* host) {
  allocator_for(b.device).copy_from_host(b.data, host, (size_t)(b.n * element_size(b.dtype)));
}
}  // namespace detail

// ---- the single process ------------------------------------------------------------------------

namespace {

class SingleProcess final : public Communicator {
 public:
  // nccl: MG_DIST=nccl, device buffers go through a 1-rank NCCL communicator.
  explicit SingleProcess(bool nccl) : nccl_requested_(nccl) {}
  int rank() const override { return 0; }
  int size() const override { return 1; }
  bool distributed() const override { return nccl_requested_; }
  std::string backend() const override {
    return nccl_requested_ ? "single process + NCCL (MG_DIST=nccl)" : "single process";
  }
  void all_reduce(std::span<const Buffer> buffers, ReduceOp op, const std::string& what) override {
    // sum, max and mean over one rank are the identity on host buffers.
    if (!nccl_requested_) return;
    std::vector<Buffer> dev;
    for (const Buffer& b : buffers)
      if (b.device.is_cuda()) dev.push_back(b);
    if (!dev.empty() && !nccl()->all_reduce(dev, op, timeout_seconds()))
      fail("the NCCL all-reduce of " + what + " did not finish in time");
  }
  void broadcast(const Buffer& b, int root, const std::string& what) override {
    MG_CHECK(root == 0, "broadcast: root ", root, " outside a world of 1 (", what, ")");
    if (nccl_requested_ && b.device.is_cuda() && !nccl()->broadcast(b, 0, timeout_seconds()))
      fail("the NCCL broadcast of " + what + " did not finish in time");
  }
  std::vector<std::string> all_gather(const std::string& mine, const std::string&) override {
    return {mine};
  }
  void barrier(const std::string&) override {}
  [[noreturn]] void abort_job(int code) override { std::exit(code); }

 private:
  detail::DeviceCollectives* nccl() {
    if (!nccl_) nccl_ = detail::make_nccl(detail::nccl_unique_id(), 1, 0);
    return nccl_.get();
  }
  [[noreturn]] void fail(const std::string& why) {
    std::fprintf(stderr, "mambagrad: %s\n", why.c_str());
    std::exit(2);
  }
  bool nccl_requested_;
  std::unique_ptr<detail::DeviceCollectives> nccl_;
};

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  long x = std::strtol(v, &end, 10);
  return (end && *end == '\0') ? (int)x : fallback;
}

std::mutex g_world_mutex;
std::unique_ptr<Communicator>* g_world = nullptr;  // set once world() has built it

}  // namespace

namespace detail {

LaunchInfo read_launch_environment() {
  LaunchInfo li;
  if (std::getenv("OMPI_COMM_WORLD_SIZE")) {  // Open MPI's mpirun
    li = {true, env_int("OMPI_COMM_WORLD_SIZE", 1), env_int("OMPI_COMM_WORLD_RANK", 0),
          env_int("OMPI_COMM_WORLD_LOCAL_RANK", 0), env_int("OMPI_COMM_WORLD_LOCAL_SIZE", 1),
          "OMPI_COMM_WORLD_*"};
  } else if (std::getenv("PMI_SIZE")) {  // MPICH / Intel MPI (Hydra), Slurm's PMI-2
    li = {true, env_int("PMI_SIZE", 1), env_int("PMI_RANK", 0), env_int("MPI_LOCALRANKID", 0),
          env_int("MPI_LOCALNRANKS", 1), "PMI_*"};
  } else if (std::getenv("PMIX_RANK")) {  // a PMIx launcher (srun --mpi=pmix, prterun)
    li = {true, env_int("SLURM_NTASKS", -1), env_int("PMIX_RANK", 0), env_int("SLURM_LOCALID", 0),
          env_int("SLURM_NTASKS_PER_NODE", 1), "PMIX_RANK"};
  }
  return li;
}

#ifndef MG_WITH_MPI
std::unique_ptr<Communicator> make_mpi_communicator(const LaunchInfo&) {
  throw Error("internal: make_mpi_communicator called in a build without MPI");
}
#endif
#ifndef MG_WITH_NCCL
std::vector<char> nccl_unique_id() {
  throw Error("MG_DIST=nccl: this build has no NCCL (configure with -DMG_NCCL=ON and "
              "-DNCCL_ROOT=<dir holding include/nccl.h and lib/libnccl.so>)");
}
std::unique_ptr<DeviceCollectives> make_nccl(const std::vector<char>&, int, int) {
  throw Error("internal: make_nccl called in a build without NCCL");
}
#endif

}  // namespace detail

#ifdef MG_WITH_MPI
bool mpi_compiled() { return true; }
#else
bool mpi_compiled() { return false; }
#endif
#ifdef MG_WITH_NCCL
bool nccl_compiled() { return true; }
#else
bool nccl_compiled() { return false; }
#endif

double timeout_seconds() {
  static const double t = [] {
    const char* v = std::getenv("MG_DIST_TIMEOUT");
    if (!v || !*v) return 600.0;
    char* end = nullptr;
    double x = std::strtod(v, &end);
    if (!(end && *end == '\0' && x > 0)) {
      std::fprintf(stderr, "mambagrad: MG_DIST_TIMEOUT='%s' is not a positive number of seconds; "
                           "using 600\n", v);
      return 600.0;
    }
    return x;
  }();
  return t;
}

Communicator& single_process() {
  static SingleProcess one(false);
  return one;
}

Communicator& world() {
  std::lock_guard<std::mutex> lock(g_world_mutex);
  // Destroyed at exit (after main returns): the MPI backend's destructor is the end-of-job
  // barrier and MPI_Finalize.
  static std::unique_ptr<Communicator> w;
  if (g_world) return **g_world;
  detail::LaunchInfo li = detail::read_launch_environment();
  const char* mode = std::getenv("MG_DIST");
  const bool want_nccl = mode && std::strcmp(mode, "nccl") == 0;
  if (li.launched && mpi_compiled()) {
    w = detail::make_mpi_communicator(li);
  } else {
    MG_CHECK(!li.launched || li.size == 1,
             "this process was started by an MPI launcher (", li.source, ": rank ", li.rank, " of ",
             li.size < 0 ? std::string("several") : std::to_string(li.size),
             "), but this build has no MPI: every rank would train alone on the same run "
             "directory. Install libopenmpi-dev and reconfigure (cmake -DMG_MPI=ON), or run "
             "without mpirun");
    if (want_nccl) (void)detail::nccl_unique_id();  // a clear error now in a build without NCCL
    w = std::make_unique<SingleProcess>(want_nccl);
  }
  g_world = &w;
  return *w;
}

Communicator& init_program() {
  Communicator& w = world();
  const char* all = std::getenv("MG_DIST_ALL_RANKS_PRINT");
  if (w.rank() != 0 && !(all && std::strcmp(all, "1") == 0)) {
    std::fflush(stdout);
    int fd = ::open("/dev/null", O_WRONLY);
    if (fd >= 0) {
      ::dup2(fd, STDOUT_FILENO);
      ::close(fd);
    }
  }
  return w;
}

void abort_job_on_error(int code) {
  Communicator* w = nullptr;
  {
    std::lock_guard<std::mutex> lock(g_world_mutex);
    if (g_world) w = g_world->get();
  }
  if (w && w->size() > 1) {
    std::fprintf(stderr, "mambagrad: %s failed: aborting the job (the other ranks would wait "
                         "for it)\n", w->who().c_str());
    std::fflush(stderr);
    w->abort_job(code);
  }
}

#ifndef MG_WITH_CUDA
std::string select_local_gpu() { return ""; }
std::string selected_gpu() { return ""; }
#endif

}  // namespace mg::dist
