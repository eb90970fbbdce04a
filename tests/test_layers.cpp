// The folders' dependency direction (docs/architecture.md), checked on the sources themselves:
//
//   core  <-  autograd  <-  ops  <-  nn  <-  train          data: core only
//                            ^
//                           cuda (implements the twins declared in ops/<op>.h)
//
// A file may include headers of its own folder and of the folders listed for it below, and
// nothing else. This is what keeps core free of the tape, autograd free of ops, and every
// CUDA API call inside cuda/. The test reads every source file under the repository root
// (MG_SOURCE_DIR) and lists each forbidden #include with its file and line.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;

// folder -> the other folders it may include (its own is always allowed).
// (Built on first use, not at static initialisation: the ASan build crashed constructing it there.)
const std::map<std::string, std::set<std::string>>& may_include() {
  static const std::map<std::string, std::set<std::string>> table = {
    {"core", {}},
    {"autograd", {"core"}},
    {"ops", {"core", "autograd"}},
    {"cuda", {"core", "ops"}},
    {"data", {"core"}},
    {"nn", {"core", "autograd", "ops"}},
    {"train", {"core", "autograd", "ops", "nn", "data", "cuda"}},
  };
  return table;
}

// Known exceptions, each with its reason (none today; an entry needs one).
const std::set<std::string> kExceptions;

// The folder of a quoted include such as "ops/arith.h", or "" for a system or local header.
std::string included_folder(const std::string& line, std::string* target) {
  size_t at = line.find("#include \"");
  if (at == std::string::npos || line.find_first_not_of(" \t") != at) return "";
  size_t begin = at + 10, end = line.find('"', begin);
  if (end == std::string::npos) return "";
  *target = line.substr(begin, end - begin);
  size_t slash = target->find('/');
  return slash == std::string::npos ? "" : target->substr(0, slash);
}

}  // namespace

TEST_CASE("layers: every #include points down the dependency order") {
  const fs::path root = MG_SOURCE_DIR;
  int files = 0;
  std::vector<std::string> violations;
  for (const auto& [folder, allowed] : may_include()) {
    REQUIRE(fs::is_directory(root / folder));
    for (const auto& entry : fs::recursive_directory_iterator(root / folder)) {
      const std::string ext = entry.path().extension().string();
      if (!entry.is_regular_file() || !(ext == ".h" || ext == ".cpp" || ext == ".cu" || ext == ".cuh"))
        continue;
      ++files;
      const std::string rel = fs::relative(entry.path(), root).generic_string();
      std::ifstream in(entry.path());
      std::string line, target;
      for (int n = 1; std::getline(in, line); ++n) {
        const std::string to = included_folder(line, &target);
        if (to.empty() || to == folder || allowed.count(to)) continue;
        if (kExceptions.count(rel + " -> " + target)) continue;
        violations.push_back(rel + ":" + std::to_string(n) + " includes " + target + " (" + folder +
                             "/ may include only its own folder and those below it)");
      }
    }
  }
  CHECK(files > 50);  // the walk found the sources
  for (const auto& v : violations) FAIL_CHECK(v);
  CHECK(violations.empty());
}

TEST_CASE("layers: the include reader understands the lines it is given") {
  std::string target;
  CHECK(included_folder("#include \"ops/arith.h\"", &target) == "ops");
  CHECK(target == "ops/arith.h");
  CHECK(included_folder("  #include \"cuda/runtime.h\"  // why", &target) == "cuda");
  CHECK(included_folder("#include <vector>", &target).empty());
  CHECK(included_folder("// #include \"ops/arith.h\" in a comment", &target).empty());
  CHECK(included_folder("#include \"op_harness.h\"", &target).empty());
}
