// The loss-curve picture (train/loss_curve.h): the points read from a log.jsonl, and an SVG
// that is well-formed XML holding every point where the axes put it (issue 16, item 14).
#include <doctest/doctest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>

#include "train/loss_curve.h"

using namespace mg;
namespace fs = std::filesystem;

namespace {

// A small XML well-formedness check: one root element; every tag closed in order; attribute
// values quoted; '&' only in the five predefined entities; no '<' in text or attributes.
std::string xml_problem(const std::string& s) {
  std::vector<std::string> open;
  size_t i = 0;
  bool root_seen = false;
  if (s.rfind("<?xml", 0) == 0) i = s.find("?>") + 2;
  while (i < s.size()) {
    if (s[i] == '&') {
      static const std::regex entity("^&(amp|lt|gt|quot|apos);");
      if (!std::regex_search(s.begin() + (long)i, s.end(), entity)) return "bad entity at " + std::to_string(i);
      ++i;
      continue;
    }
    if (s[i] != '<') {
      if (open.empty() && !std::isspace((unsigned char)s[i])) return "text outside the root at " + std::to_string(i);
      ++i;
      continue;
    }
    const size_t end = s.find('>', i);
    if (end == std::string::npos) return "unterminated tag at " + std::to_string(i);
    std::string tag = s.substr(i + 1, end - i - 1);
    if (tag.find('<') != std::string::npos) return "'<' inside a tag at " + std::to_string(i);
    static const std::regex entity_in_tag("^&(amp|lt|gt|quot|apos);");
    for (size_t a = tag.find('&'); a != std::string::npos; a = tag.find('&', a + 1))
      if (!std::regex_search(tag.begin() + (long)a, tag.end(), entity_in_tag)) return "bad entity in a tag";
    if (tag[0] == '/') {
      if (open.empty() || open.back() != tag.substr(1)) return "mismatched </" + tag.substr(1) + ">";
      open.pop_back();
    } else {
      const bool self_closing = tag.back() == '/';
      if (self_closing) tag.pop_back();
      const std::string name = tag.substr(0, tag.find_first_of(" \n"));
      static const std::regex attrs(R"(^[A-Za-z][\w:-]*(\s+[A-Za-z][\w:-]*="[^"<]*")*\s*$)");
      if (!std::regex_match(tag, attrs)) return "malformed tag <" + tag + ">";
      if (open.empty() && root_seen) return "a second root element";
      root_seen = true;
      if (!self_closing) open.push_back(name);
    }
    i = end + 1;
  }
  if (!open.empty()) return "unclosed <" + open.back() + ">";
  return root_seen ? "" : "no root element";
}

std::vector<std::pair<double, double>> polyline_points(const std::string& svg, const std::string& cls) {
  std::smatch m;
  REQUIRE(std::regex_search(svg, m, std::regex("class=\"" + cls + "\"[^>]* points=\"([^\"]*)\"")));
  std::vector<std::pair<double, double>> out;
  std::stringstream ss(m[1].str());
  std::string pair;
  while (ss >> pair) {
    const size_t comma = pair.find(',');
    out.push_back({std::stod(pair.substr(0, comma)), std::stod(pair.substr(comma + 1))});
  }
  return out;
}

}  // namespace

TEST_CASE("loss curve: the log's training and validation losses become the picture's points") {
  const fs::path dir = fs::temp_directory_path() / ("mg_curve_<&>_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string log = (dir / "log.jsonl").string();
  {
    std::ofstream f(log);
    f << R"({"event": "start", "command": "train_lm", "config": {"x": "1"}})" << "\n"
      << R"({"step": 1, "tokens": 1000, "loss": 5.5, "lr": 0.001})" << "\n"
      << R"({"step": 2, "tokens": 2000, "loss": 4.0, "lr": 0.001})" << "\n"
      << R"({"step": 3, "tokens": 3000, "loss": null, "skipped": true})" << "\n"
      << R"({"event": "eval", "step": 3, "tokens": 3000, "val_loss": 4.25})" << "\n"
      << R"({"step": 4, "tokens": 4000, "loss": 3.0, "lr": 0.001})" << "\n"
      << R"({"event": "eval", "step": 4, "tokens": 4000, "val_loss": 3.5, "val_bits_per_byte": 5})" << "\n"
      << R"({"step": 5, "tok)";  // torn by a crash
  }
  train::LossCurve c = train::read_loss_curve(log);
  CHECK(c.train == std::vector<std::pair<double, double>>{{1000, 5.5}, {2000, 4.0}, {4000, 3.0}});
  CHECK(c.val == std::vector<std::pair<double, double>>{{3000, 4.25}, {4000, 3.5}});
  CHECK(c.x_label == "tokens");
  CHECK(c.title.find("<&>") != std::string::npos);

  const std::string svg_path = (dir / "loss_curve.svg").string();
  train::write_loss_curve_svg(log, svg_path);
  std::ifstream in(svg_path);
  const std::string svg((std::istreambuf_iterator<char>(in)), {});
  CHECK(xml_problem(svg) == "");
  CHECK(svg.find("&lt;&amp;&gt;") != std::string::npos);  // the title, escaped
  // Every point, in order; x grows with tokens, y falls as the loss grows (SVG y points down).
  auto train = polyline_points(svg, "train");
  REQUIRE(train.size() == 3);
  CHECK(train[0].first < train[1].first);
  CHECK(train[1].first < train[2].first);
  CHECK(train[0].second < train[1].second);  // 5.5 is drawn above 4.0
  CHECK(train[1].second < train[2].second);
  // The x axis is linear in tokens from 0: x(2000) - x(1000) == x(1000) - x(0) = x(1000) - left.
  CHECK(train[1].first - train[0].first == doctest::Approx(train[0].first - 64).epsilon(0.01));
  CHECK(polyline_points(svg, "val").size() == 2);
  CHECK(polyline_points(svg, "train-mean").size() == 3);
  std::smatch m;
  std::regex circle("<circle class=\"val-point\"[^>]*data-x=\"([^\"]*)\" data-y=\"([^\"]*)\"");
  std::vector<std::pair<double, double>> circles;
  for (auto it = svg.cbegin(); std::regex_search(it, svg.cend(), m, circle); it = m.suffix().first)
    circles.push_back({std::stod(m[1]), std::stod(m[2])});
  CHECK(circles == c.val);
  CHECK(xml_problem("<svg><g></svg></g>") != "");  // the checker itself catches misnesting
  CHECK(xml_problem("<svg a=\"1 & 2\"/>") != "");
  fs::remove_all(dir);
}

TEST_CASE("loss curve: an empty or missing log writes nothing; old logs without tokens use steps") {
  const fs::path dir = fs::temp_directory_path() / ("mg_curve2_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string log = (dir / "log.jsonl").string();
  train::write_loss_curve_svg(log, (dir / "a.svg").string());
  CHECK(!fs::exists(dir / "a.svg"));
  { std::ofstream(log) << "{\"step\": 1, \"loss\": 2.0}\n{\"step\": 2, \"loss\": 1.0}\n"; }
  train::LossCurve c = train::read_loss_curve(log);
  CHECK(c.x_label == "step");
  CHECK(c.train == std::vector<std::pair<double, double>>{{1, 2.0}, {2, 1.0}});
  fs::remove_all(dir);
}
