"""The sweep's results: seeds aggregated into one row per point (mean and sample std), the
summary file (`summary.json`, what notebooks and figures read), and the tables it prints.

A run whose metrics come as `<metric>_alpha<a>` (caption scoring,
s = log P(t|I) - alpha * log P(t)) gets one row per alpha of the table's `alphas`.
"""

import dataclasses
import json
import re

from ig_captioner import paths

ALPHA = re.compile(r"^(.*)_alpha(-?[0-9.]+)$")


@dataclasses.dataclass(frozen=True)
class Spread:
  """A metric over the seeds of one sweep point."""
  mean: float
  std: float  # Sample standard deviation (ddof=1).
  n: int


def aggregate_seeds(results: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
  """Merges the results that share a label (one point's seeds), in order of first appearance:
  each metric that every seed reports becomes a `Spread`; a label seen once keeps its numbers."""
  groups: dict[str, list[dict]] = {}
  for label, metrics in results:
    groups.setdefault(label, []).append(metrics)
  merged = []
  for label, runs in groups.items():
    if len(runs) == 1:
      merged.append((label, runs[0]))
      continue
    shared = [k for k, v in runs[0].items() if isinstance(v, (int, float))
              and all(isinstance(r.get(k), (int, float)) for r in runs)]
    spreads = {}
    for name in shared:
      values = [float(r[name]) for r in runs]
      mean = sum(values) / len(values)
      var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
      spreads[name] = Spread(mean, var ** 0.5, len(values))
    merged.append((f"{label} (n={len(runs)})", spreads))
  return merged


def point_label(label: str) -> str:
  """The sweep point a result row belongs to: its label without `aggregate_seeds`' ' (n=K)'."""
  return re.sub(r" \(n=\d+\)$", "", label)


SUMMARY = "summary.json"  # Under the sweep's workdir: the aggregated results, for plots.


def write_summary(path: str, results: list[tuple[str, dict]]) -> None:
  """Writes `[{"label": ..., "metrics": {name: value or {"mean", "std", "n"}}}]` atomically."""
  rows = [{"label": label, "metrics": {k: dataclasses.asdict(v) if isinstance(v, Spread) else v
                                       for k, v in metrics.items()}}
          for label, metrics in results]
  paths.write_atomic(path, json.dumps(rows, indent=1))


def read_summary(path: str) -> list[tuple[str, dict]]:
  """(label, metrics) of a summary file, as `write_summary` was given them; [] if none."""
  if not paths.path(path).exists():
    return []
  return [(row["label"], {k: Spread(**v) if isinstance(v, dict) else v
                          for k, v in row["metrics"].items()})
          for row in json.loads(paths.path(path).read_text())]


def merge_summary(previous: list[tuple[str, dict]], results: list[tuple[str, dict]],
                  order: list[str]) -> list[tuple[str, dict]]:
  """`results` with the `previous` rows of the sweep's other runs (an `--only` sweep keeps what
  the earlier ones wrote), ordered as the sweep lists its runs (`order`: labels or groups); a
  previous row the sweep no longer lists is dropped."""
  rows = {point_label(label): (label, metrics) for label, metrics in previous
          if point_label(label) in order}
  rows.update({point_label(label): (label, metrics) for label, metrics in results})
  return [rows[p] for p in dict.fromkeys(order) if p in rows]


def table_values(label: str, metrics: dict, columns: dict, alphas) -> list[tuple[str, list]]:
  """(row label, values) of one run: a row per alpha if a column has `_alpha<a>` variants
  (caption scoring), and one without alpha if a column has no variants or (a family scoring
  both ways) has both. A value is a float, a `Spread` or None (not reported)."""
  variants = sorted({float(m.group(2)) for name in metrics if (m := ALPHA.match(name))
                     and m.group(1) in columns.values() and float(m.group(2)) in alphas})
  both = any(metric in metrics and any(f"{metric}_alpha{a}" in metrics for a in variants)
             for metric in columns.values())

  def value(metric, alpha):
    found = metrics.get(f"{metric}_alpha{alpha}")
    if found is None and (alpha is None or not both):  # A metric alpha cannot change.
      found = metrics.get(metric)
    return found

  rows = [None] if both or not variants else []
  return [(label if alpha is None else f"{label}, alpha={alpha:g}",
           [value(metric, alpha) for metric in columns.values()]) for alpha in rows + variants]


def table_rows(label: str, metrics: dict, columns: dict, alphas) -> list[list[str]]:
  """`table_values` as table cells (%, a spread as mean ± std, '-' where not reported)."""
  def cell(value):
    if isinstance(value, Spread):
      return f"{100 * value.mean:.1f} ± {100 * value.std:.1f}"
    return "-" if value is None else f"{100 * value:.1f}"

  return [[row] + [cell(v) for v in values]
          for row, values in table_values(label, metrics, columns, alphas)]


def format_table(results: list[tuple[str, dict]], columns: dict, alphas) -> str:
  """Markdown table: rows = runs (x alphas), columns = `columns`' headers, values in %."""
  header = ["model"] + list(columns)
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for label, metrics in results:
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(label, metrics, columns,
                                                                  alphas)]
  return "\n".join(lines)


def default_tables(config) -> tuple[list, tuple]:
  """One table per eval of every metric it reports (without alpha suffixes)."""
  return [(name, None) for name in config.evals], tuple(
      float(a) for ev in config.evals.values() for a in ev.get("alphas", ()))
