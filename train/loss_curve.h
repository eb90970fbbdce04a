// train/loss_curve.h — a run's loss curve as an SVG picture, written by our own small writer.
//
// write_loss_curve_svg reads a run's log.jsonl (train/logger.h) and draws, against tokens
// trained on:
//   * the training loss of every step (a thin light line; skipped steps, logged as null, are
//     left out) and its running mean over a window of ~2% of the steps (the solid line);
//   * the validation loss of every evaluation ("val_loss" of an "eval" event; dots joined).
// Lines without "tokens" (logs of older versions) use the step number instead. The trainer
// writes <run_dir>/loss_curve.svg next to log.jsonl at every checkpoint and at the end.
//
// The SVG is plain SVG 1.1 (no scripts, no external fonts): a browser, an image viewer or a
// Markdown renderer shows it. Each data series is one <polyline> with class "train",
// "train-mean" or "val" (points in pixel coordinates, in data order) and validation points are
// <circle class="val-point">; the data-x / data-y attributes of a circle hold its values.
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace mg::train {

struct LossCurve {
  std::string title;
  std::string x_label = "tokens";
  std::vector<std::pair<double, double>> train;  // (x, loss), x increasing
  std::vector<std::pair<double, double>> val;
};

// The curve data of a log.jsonl; lines that are not JSON (a torn last line) are skipped.
LossCurve read_loss_curve(const std::string& log_path);

// The picture (width x height pixels) as SVG text.
std::string loss_curve_svg(const LossCurve& curve, int width = 720, int height = 420);

// read_loss_curve + loss_curve_svg, written atomically to svg_path. Does nothing when the log
// holds no finite training loss yet; throws mg::Error when the file cannot be written.
void write_loss_curve_svg(const std::string& log_path, const std::string& svg_path);

}  // namespace mg::train
