"""The report of a lambda x alpha study of caption scoring (`configs/ig_study.py`): alpha chosen
on the validation split only, held-out accuracy at that alpha, the training diagnostics, and two
figures saved beside the runs.

Runs are labelled `<setting>, lambda=<l>` (setting: any text, e.g. 'noisy, mu, paper'); a
row of `results` holds `sweep.Spread`s (several seeds) or plain numbers (one). Alpha is chosen
per (setting, lambda) on the seeds' *mean* validation accuracy; the held-out numbers at that
alpha are then read, never used for a choice.
"""

import dataclasses
import re

from ig_captioner import metric_files
from ig_captioner import paths

_LABEL = re.compile(r"^(?P<setting>.*), lambda=(?P<lam>[0-9.eE+-]+)(?: \(n=\d+\))?$")


@dataclasses.dataclass(frozen=True)
class Cell:
  mean: float
  std: float  # 0 for a single run.
  n: int


def parse_label(label: str) -> tuple[str, float] | None:
  """'noisy, mu, paper, lambda=0.3 (n=3)' -> ('noisy, mu, paper', 0.3); None otherwise."""
  match = _LABEL.match(label)
  return (match["setting"], float(match["lam"])) if match else None


def cell(metrics: dict, name: str) -> Cell | None:
  value = metrics.get(name)
  if value is None:
    return None
  if hasattr(value, "mean"):
    return Cell(value.mean, value.std, value.n)
  return Cell(float(value), 0.0, 1)


def alpha_metric(name: str, alpha: float) -> str:
  return f"{name}_alpha{float(alpha)}"


def select_alpha(metrics: dict, val_metric: str, alphas) -> float | None:
  """The alpha of highest mean validation accuracy (the smallest such alpha on a tie)."""
  scored = [(cell(metrics, alpha_metric(val_metric, a)), a) for a in alphas]
  scored = [(c.mean, -a, a) for c, a in scored if c is not None]
  return max(scored)[2] if scored else None


def _pct(c: Cell | None) -> str:
  if c is None:
    return "-"
  return f"{100 * c.mean:.1f} ± {100 * c.std:.1f}" if c.n > 1 else f"{100 * c.mean:.1f}"


def _num(c: Cell | None) -> str:
  if c is None:
    return "-"
  return f"{c.mean:.3f} ± {c.std:.3f}" if c.n > 1 else f"{c.mean:.3f}"


def grouped(results) -> dict[str, list[tuple[float, dict]]]:
  """{setting: [(lambda, metrics), ...] by lambda}, in order of first appearance."""
  out: dict[str, list] = {}
  for label, metrics in results:
    parsed = parse_label(label)
    if parsed:
      out.setdefault(parsed[0], []).append((parsed[1], metrics))
  return {k: sorted(v, key=lambda x: x[0]) for k, v in out.items()}


def selection_table(results, *, alphas, val_metric: str, test_metric: str,
                    diagnostics: str) -> str:
  """Markdown: per setting and lambda, the alpha chosen on validation and the accuracies."""
  head = ["setting", "lambda", "alpha (val)", "val top-1", "held-out top-1",
          "held-out alpha=0", "held-out alpha=1", "IG nats/token", "prior KL"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for setting, rows in grouped(results).items():
    for lam, metrics in rows:
      alpha = select_alpha(metrics, val_metric, alphas)
      at = (lambda name, a=alpha: None if a is None else  # pylint: disable=g-long-lambda
            cell(metrics, alpha_metric(name, a)))
      lines.append("| " + " | ".join([
          setting, f"{lam:g}", "-" if alpha is None else f"{alpha:g}", _pct(at(val_metric)),
          _pct(at(test_metric)), _pct(cell(metrics, alpha_metric(test_metric, 0.0))),
          _pct(cell(metrics, alpha_metric(test_metric, 1.0))),
          _num(cell(metrics, f"{diagnostics}/info_gain_per_token")),
          _num(cell(metrics, f"{diagnostics}/prior_kl"))]) + " |")
  return "\n".join(lines)


def trajectories(per_seed_dirs: dict[str, list[str]], names: list[str]) -> dict:
  """{group: {step: {metric: [value per seed]}}} from each run's `eval_metrics.jsonl`."""
  out = {}
  for group, dirs in per_seed_dirs.items():
    steps: dict[int, dict] = {}
    for run_dir in dirs:
      for row in metric_files.read_jsonl(metric_files.jsonl_path(run_dir, "eval")):
        if "status" in row:
          continue
        for name in names:
          if name in row:
            steps.setdefault(row["step"], {}).setdefault(name, []).append(row[name])
    out[group] = dict(sorted(steps.items()))
  return out


def trajectory_table(curves: dict, names: dict[str, str]) -> str:
  """Markdown: per run group and evaluated step, the seeds' mean of each metric."""
  head = ["run", "step"] + list(names)
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for group, steps in curves.items():
    for step, values in steps.items():
      cells = [f"{sum(v) / len(v):.3f}" if (v := values.get(m)) else "-" for m in names.values()]
      lines.append("| " + " | ".join([group, str(step)] + cells) + " |")
  return "\n".join(lines)


def plot_accuracy_vs_alpha(results, path: str, *, alphas, test_metric: str) -> str | None:
  """One panel per setting: held-out top-1 (%) against alpha, a line per lambda, error bars =
  sample std over seeds. Returns the path, or None without matplotlib."""
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  settings = grouped(results)
  cols = min(3, len(settings)) or 1
  rows = -(-len(settings) // cols) or 1
  fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False,
                           sharey=True)
  for ax, (setting, lam_rows) in zip(axes.flat, settings.items()):
    for lam, metrics in lam_rows:
      cells = [(a, cell(metrics, alpha_metric(test_metric, a))) for a in alphas]
      cells = [(a, c) for a, c in cells if c is not None]
      ax.errorbar([a for a, _ in cells], [100 * c.mean for _, c in cells],
                  yerr=[100 * c.std for _, c in cells], marker="o", ms=3, capsize=2,
                  label=f"lambda={lam:g}")
    ax.set_title(setting, fontsize=9)
    ax.set_xlabel("alpha")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  for ax in axes[:, 0]:
    ax.set_ylabel("held-out top-1 (%)")
  for ax in list(axes.flat)[len(settings):]:
    ax.axis("off")
  fig.tight_layout()
  with paths.path(path).open("wb") as f:
    fig.savefig(f, format="png", dpi=110)
  plt.close(fig)
  return path


def plot_trajectories(curves: dict, path: str, names: dict[str, str]) -> str | None:
  """One panel per metric: its seeds' mean against the train step, a line per run group."""
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.3), squeeze=False)
  colors = plt.get_cmap("tab20").colors
  styles = ("-", "--", ":")  # With 20 colours: 60 groups tell apart.
  for ax, (title, metric) in zip(axes[0], names.items()):
    for i, (group, steps) in enumerate(curves.items()):
      points = [(s, sum(v[metric]) / len(v[metric])) for s, v in steps.items() if v.get(metric)]
      ax.plot([s for s, _ in points], [y for _, y in points], marker="o", ms=3, label=group,
              color=colors[i % len(colors)], linestyle=styles[i // len(colors) % len(styles)])
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("train step")
    ax.grid(alpha=0.3)
  handles, labels = axes[0][0].get_legend_handles_labels()
  fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3,
             fontsize=7, frameon=False)
  fig.tight_layout()
  with paths.path(path).open("wb") as f:
    fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
  plt.close(fig)
  return path


def report(results, workdir: str, runs, *, alphas, val_metric: str,
           test_metric: str, diagnostics: str) -> str:
  """The text the study prints; saves its figures under `workdir`."""
  table = selection_table(results, alphas=alphas, val_metric=val_metric,
                          test_metric=test_metric, diagnostics=diagnostics)
  names = {"CE with image": f"{diagnostics}/ce_with_image",
           "CE text only": f"{diagnostics}/ce_text_only",
           "IG nats/token": f"{diagnostics}/info_gain_per_token",
           "prior KL": f"{diagnostics}/prior_kl"}
  dirs: dict[str, list[str]] = {}
  for run in runs:
    dirs.setdefault(run.group or run.label, []).append(paths.join(workdir, run.directory))
  curves = trajectories(dirs, list(names.values()))
  figure = plot_accuracy_vs_alpha(results, paths.join(workdir, "accuracy_vs_alpha.png"),
                                  alphas=alphas, test_metric=test_metric)
  curve_figure = plot_trajectories(curves, paths.join(workdir, "diagnostics_over_steps.png"),
                                   names)
  saved = (f"Figures: {figure}, {curve_figure}" if figure else
           "No figures: matplotlib is not installed (pip install -e '.[plots]').")
  return "\n\n".join([
      "Alpha chosen on the validation split (mean over seeds); held-out top-1 at that alpha "
      "(mean ± sample std over seeds); diagnostics on validation at the final step:",
      table, "Diagnostics over training (validation split; mean over seeds):",
      trajectory_table(curves, names), saved])
