#include "train/loss_curve.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/json.h"

namespace fs = std::filesystem;

namespace mg::train {

namespace {

std::string xml_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      default: o += c;
    }
  }
  return o;
}

std::string num(double v, const char* f = "%.1f") {
  char buf[48];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// 1.5M, 250k, 12: tick labels for token counts.
std::string short_count(double v) {
  if (std::fabs(v) >= 1e9) return num(v / 1e9, "%gG");
  if (std::fabs(v) >= 1e6) return num(v / 1e6, "%gM");
  if (std::fabs(v) >= 1e3) return num(v / 1e3, "%gk");
  return num(v, "%g");
}

// Ticks at 1, 2 or 5 times a power of ten, about `want` of them over [lo, hi].
std::vector<double> nice_ticks(double lo, double hi, int want) {
  const double raw = (hi - lo) / std::max(want, 1);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  std::vector<double> t;
  for (double v = std::ceil(lo / step) * step; v <= hi + step * 1e-9; v += step)
    t.push_back(std::fabs(v) < step * 1e-9 ? 0.0 : v);
  return t;
}

// The running mean over the `window` points ending at each point.
std::vector<std::pair<double, double>> running_mean(const std::vector<std::pair<double, double>>& p,
                                                    size_t window) {
  std::vector<std::pair<double, double>> out;
  double sum = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    sum += p[i].second;
    if (i >= window) sum -= p[i - window].second;
    out.push_back({p[i].first, sum / (double)std::min(i + 1, window)});
  }
  return out;
}

}  // namespace

LossCurve read_loss_curve(const std::string& log_path) {
  LossCurve c;
  c.title = "loss: " + fs::path(log_path).parent_path().filename().string();
  std::ifstream in(log_path);
  std::string line;
  bool have_tokens = true;
  while (std::getline(in, line)) {
    json::Value v;
    try {
      v = json::parse(line, log_path);
    } catch (const Error&) {
      continue;  // a line a crash cut short
    }
    if (!v.is_object()) continue;
    const json::Value* step = v.find("step");
    if (!step || !step->is_number()) continue;
    const json::Value* tokens = v.find("tokens");
    if (!tokens) have_tokens = false;
    const double x = tokens && tokens->is_number() ? tokens->as_double() : step->as_double();
    const json::Value* event = v.find("event");
    if (!event) {
      const json::Value* loss = v.find("loss");
      if (loss && loss->is_number() && std::isfinite(loss->as_double()))
        c.train.push_back({x, loss->as_double()});
    } else if (event->is_string() && event->as_string() == "eval") {
      const json::Value* loss = v.find("val_loss");
      if (loss && loss->is_number()) c.val.push_back({x, loss->as_double()});
    }
  }
  if (!have_tokens) c.x_label = "step";
  return c;
}

std::string loss_curve_svg(const LossCurve& c, int width, int height) {
  // The plot area inside margins for the title, the labels and the legend.
  const double left = 64, right = width - 20.0, top = 40, bottom = height - 52.0;
  double x0 = 0, x1 = 1, y0 = INFINITY, y1 = -INFINITY;
  for (const auto* s : {&c.train, &c.val})
    for (auto& [x, y] : *s) {
      x1 = std::max(x1, x);
      y0 = std::min(y0, y);
      y1 = std::max(y1, y);
    }
  if (!(y0 <= y1)) y0 = 0, y1 = 1;
  const double pad = std::max((y1 - y0) * 0.05, 1e-3);
  y0 = std::max(0.0, y0 - pad);
  y1 += pad;
  auto px = [&](double x) { return left + (x - x0) / (x1 - x0) * (right - left); };
  auto py = [&](double y) { return bottom - (y - y0) / (y1 - y0) * (bottom - top); };
  auto polyline = [&](const std::vector<std::pair<double, double>>& p, const char* cls,
                      const char* style) {
    std::string s = std::string("<polyline class=\"") + cls + "\" fill=\"none\" " + style + " points=\"";
    for (size_t i = 0; i < p.size(); ++i) {
      if (i) s += ' ';
      s += num(px(p[i].first));
      s += ',';
      s += num(py(p[i].second));
    }
    return s + "\"/>\n";
  };

  std::string o = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  o += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + std::to_string(width) +
       "\" height=\"" + std::to_string(height) + "\" viewBox=\"0 0 " + std::to_string(width) +
       " " + std::to_string(height) + "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  o += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  o += "<text x=\"" + num(width / 2.0) + "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">" +
       xml_escape(c.title) + "</text>\n";
  // Grid and ticks.
  for (double t : nice_ticks(y0, y1, 6)) {
    o += "<line x1=\"" + num(left) + "\" y1=\"" + num(py(t)) + "\" x2=\"" + num(right) + "\" y2=\"" +
         num(py(t)) + "\" stroke=\"#e4e4e4\"/>\n";
    o += "<text x=\"" + num(left - 6) + "\" y=\"" + num(py(t) + 4) + "\" text-anchor=\"end\">" +
         num(t, "%g") + "</text>\n";
  }
  for (double t : nice_ticks(x0, x1, 6)) {
    o += "<line x1=\"" + num(px(t)) + "\" y1=\"" + num(top) + "\" x2=\"" + num(px(t)) + "\" y2=\"" +
         num(bottom) + "\" stroke=\"#e4e4e4\"/>\n";
    o += "<text x=\"" + num(px(t)) + "\" y=\"" + num(bottom + 16) + "\" text-anchor=\"middle\">" +
         (c.x_label == "tokens" ? short_count(t) : num(t, "%g")) + "</text>\n";
  }
  o += "<rect x=\"" + num(left) + "\" y=\"" + num(top) + "\" width=\"" + num(right - left) +
       "\" height=\"" + num(bottom - top) + "\" fill=\"none\" stroke=\"#888\"/>\n";
  o += "<text x=\"" + num((left + right) / 2) + "\" y=\"" + num(height - 12.0) +
       "\" text-anchor=\"middle\">" + xml_escape(c.x_label) + "</text>\n";
  o += "<text transform=\"translate(16 " + num((top + bottom) / 2) +
       ") rotate(-90)\" text-anchor=\"middle\">loss (nats per token)</text>\n";
  // The data.
  o += polyline(c.train, "train", "stroke=\"#9ecae1\" stroke-width=\"1\"");
  const size_t window = std::max<size_t>(1, c.train.size() / 50);
  o += polyline(running_mean(c.train, window), "train-mean", "stroke=\"#1f77b4\" stroke-width=\"2\"");
  o += polyline(c.val, "val", "stroke=\"#d62728\" stroke-width=\"1.5\"");
  for (auto& [x, y] : c.val)
    o += "<circle class=\"val-point\" cx=\"" + num(px(x)) + "\" cy=\"" + num(py(y)) +
         "\" r=\"3.5\" fill=\"#d62728\" data-x=\"" + num(x, "%.17g") + "\" data-y=\"" +
         num(y, "%.17g") + "\"/>\n";
  // The legend, top right.
  const double lx = right - 200, ly = top + 14;
  auto entry = [&](double y, const char* color, const std::string& text) {
    o += "<line x1=\"" + num(lx) + "\" y1=\"" + num(y) + "\" x2=\"" + num(lx + 22) + "\" y2=\"" +
         num(y) + "\" stroke=\"" + color + "\" stroke-width=\"2\"/>\n";
    o += "<text x=\"" + num(lx + 28) + "\" y=\"" + num(y + 4) + "\">" + xml_escape(text) + "</text>\n";
  };
  entry(ly, "#1f77b4", "train (mean of " + std::to_string(window) + " step" + (window > 1 ? "s)" : ")"));
  if (!c.val.empty()) entry(ly + 18, "#d62728", "validation");
  o += "</svg>\n";
  return o;
}

void write_loss_curve_svg(const std::string& log_path, const std::string& svg_path) {
  LossCurve c = read_loss_curve(log_path);
  if (c.train.empty()) return;
  const std::string svg = loss_curve_svg(c);
  const std::string tmp = svg_path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc | std::ios::binary);
    f << svg;
    f.flush();
    MG_CHECK(f.good(), "loss curve: cannot write '", tmp, "'");
  }
  std::error_code ec;
  fs::rename(tmp, svg_path, ec);
  MG_CHECK(!ec, "loss curve: cannot rename '", tmp, "' to '", svg_path, "': ", ec.message());
}

}  // namespace mg::train
