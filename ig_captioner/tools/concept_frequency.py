"""Per-class zero-shot accuracy against how often the training captions name each class, for
standard (alpha 0) and IG scoring: does subtracting the language prior flatten the dependence
on concept frequency that `log P(t|I)` inherits?

    python -m ig_captioner.tools.concept_frequency --workdir=RUN [--workdir=RUN2 ...] \\
        [--eval=NAME] [--alphas=0,1] [--limit=1000000] [--matching=words|metaclip] \\
        [--curation=DIR] [--out=DIR]

Reads each run's latest checkpoint and its zero-shot evaluator `--eval` (default: the first),
counts the classes' names in up to `--limit` of its training captions (`data/concept_counts.py`;
`--matching`: whole words, the default, or MetaCLIP's substring matching) or takes the counts of
a curation over the whole pool (`--curation=DIR`: `python -m ig_captioner.data.curate` run with
the class names as its metadata, one a line; on Beam, for billions of captions), classifies the
evaluator's split with the inference API (as the evaluator scores), and writes to `--out`
(default FIRST_RUN/concept_frequency): `concept_frequency.json` (per run and class: captions
naming it, accuracy per alpha; per alpha: the least-squares slope of accuracy in
points per tenfold frequency and Pearson's r), `concept_frequency.md` (the tables) and
`concept_frequency.png` (one panel per run; with matplotlib, the `plots` extra). Classes never
named get frequency 1/(captions + 1).
"""

import json
from typing import Sequence

from absl import flags
import numpy as np

from ig_captioner import cli
from ig_captioner import inference
from ig_captioner import paths
from ig_captioner.data import concept_counts
from ig_captioner.data import sources


def fit(log_frequency_C: np.ndarray, accuracy_C: np.ndarray) -> dict:
  """Least-squares slope of accuracy (points) per unit of log10 frequency, and Pearson's r."""
  x, y = np.asarray(log_frequency_C, np.float64), 100 * np.asarray(accuracy_C, np.float64)
  if np.ptp(x) == 0:
    return {"slope_points_per_decade": None, "pearson_r": None}
  slope = np.polyfit(x, y, 1)[0]
  r = np.corrcoef(x, y)[0, 1] if np.ptp(y) else 0.0
  return {"slope_points_per_decade": float(slope), "pearson_r": float(r)}


def report(run: inference.Run, eval_name: str | None = None,
           alphas: Sequence[float] = (0.0, 1.0), limit: int = 1_000_000,
           matching: str = "words", curation: str | None = None) -> dict:
  """The figures `main` writes, as a dict."""
  task = run.task(eval_name, kind="zeroshot")
  if curation:
    counts_C, total = concept_counts.read_curation(curation, task.class_names)
  else:
    counts_C, total = concept_counts.count(
        sources.caption_texts(run.config.data, limit=limit), task.class_names, matching)
  frequency_C = np.maximum(counts_C, 1) / (total + (counts_C == 0).any())
  examples = task.examples()
  scores = run.classify(examples.images_BxHxWx3, task.class_names, task.templates,
                        alphas=alphas, top_k=1)
  out = {"run": run.workdir, "step": run.step, "eval": task.name, "captions": total,
         "counted_by": f"curation {curation}" if curation else f"{matching} matching",
         "classes": [], "fits": {}}
  accuracy = {}
  for alpha, result in scores["ig"].items():
    pred_B = result["topk_BxK"][:, 0]
    accuracy[alpha] = np.array([np.mean(pred_B[examples.labels_B == c] == c)
                                for c in range(len(task.class_names))])
    out["fits"][f"alpha{alpha:g}"] = fit(np.log10(frequency_C), accuracy[alpha])
  for c, name in enumerate(task.class_names):
    out["classes"].append({"class": name, "captions_naming": int(counts_C[c]),
                           "frequency": float(frequency_C[c]),
                           **{f"top1_alpha{a:g}": float(accuracy[a][c]) for a in accuracy}})
  return out


def table(result: dict) -> str:
  """The markdown table of `report`'s result, most frequent class first."""
  alphas = [k for k in result["classes"][0] if k.startswith("top1_alpha")]
  lines = ["| class | captions naming it | frequency | " +
           " | ".join(f"top-1 (alpha {a[len('top1_alpha'):]})" for a in alphas) + " |",
           "|---|---|---|" + "---|" * len(alphas)]
  for row in sorted(result["classes"], key=lambda r: -r["frequency"]):
    lines.append(f"| {row['class']} | {row['captions_naming']} | {row['frequency']:.2e} | " +
                 " | ".join(f"{100 * row[a]:.1f}" for a in alphas) + " |")
  lines.append(f"\n{result['captions']} training captions, counted by "
               f"{result.get('counted_by', 'words matching')}")
  for name, fitted in result["fits"].items():
    if fitted["slope_points_per_decade"] is not None:
      lines.append(f"\n{name}: {fitted['slope_points_per_decade']:+.1f} points per tenfold "
                   f"frequency, r = {fitted['pearson_r']:+.2f}")
  return "\n".join(lines)


def figure(results: Sequence[dict], path: str) -> bool:
  """Accuracy against log frequency per alpha, one panel per run, saved to `path`; False
  without matplotlib."""
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  except ImportError:
    return False
  fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 3.8), squeeze=False,
                           sharey=True)
  for result, ax in zip(results, axes[0]):
    _panel(ax, result)
  fig.tight_layout()
  with paths.path(path).open("wb") as f:
    fig.savefig(f, dpi=120)
  plt.close(fig)
  return True


def _panel(ax, result: dict) -> None:
  frequency_C = np.array([r["frequency"] for r in result["classes"]])
  for name, fitted in result["fits"].items():
    accuracy_C = 100 * np.array([r[f"top1_{name}"] for r in result["classes"]])
    slope = fitted["slope_points_per_decade"]
    label = name.replace("alpha", "alpha=") + (f" ({slope:+.1f} pts/decade)" if slope else "")
    ax.scatter(frequency_C, accuracy_C, label=label)
  for r in result["classes"]:
    ax.annotate(r["class"], (r["frequency"], 100 * r[f"top1_{next(iter(result['fits']))}"]),
                fontsize=7, xytext=(3, 3), textcoords="offset points")
  ax.set(xscale="log", xlabel="share of training captions naming the class",
         ylabel="per-class top-1 (%)",
         title=f"{paths.path(result['run']).name}: {result['eval']}")
  ax.legend(fontsize=8)


def main():
  """Command-line entry point (flags are defined here so that importing defines none)."""
  workdirs = flags.DEFINE_multi_string("workdir", None, "A trained or converted run "
                                       "(repeatable).")
  eval_name = flags.DEFINE_string("eval", None, "Its zero-shot evaluator (default: the first).")
  alphas = flags.DEFINE_list("alphas", ["0", "1"], "IG alphas to compare.")
  limit = flags.DEFINE_integer("limit", 1_000_000, "Training captions read at most.")
  matching = flags.DEFINE_enum("matching", "words", concept_counts.MATCHINGS,
                               "What names a class: its whole words, any case (words), or "
                               "MetaCLIP's case-kept substring matching (metaclip).")
  curation = flags.DEFINE_string("curation", None, "A curation's output directory whose "
                                 "metadata lists the class names: its counts, not --limit's.")
  out = flags.DEFINE_string("out", None, "Output directory (default RUN/concept_frequency).")
  flags.mark_flags_as_required(["workdir"])

  def run(argv):
    del argv
    results = [report(inference.load_run(w), eval_name.value, [float(a) for a in alphas.value],
                      limit.value, matching.value, curation.value) for w in workdirs.value]
    directory = out.value or paths.join(workdirs.value[0], "concept_frequency")
    paths.path(directory).mkdir(parents=True, exist_ok=True)
    tables = "\n\n".join(f"### {r['run']}\n\n{table(r)}" for r in results)
    paths.write_atomic(paths.join(directory, "concept_frequency.json"),
                       json.dumps(results, indent=1).encode())
    paths.write_atomic(paths.join(directory, "concept_frequency.md"), tables.encode())
    drawn = figure(results, paths.join(directory, "concept_frequency.png"))
    print(tables)
    print(f"\nWrote {directory}" + ("" if drawn else " (no figure: pip install matplotlib)"))
  cli.run(run)


if __name__ == "__main__":
  main()
