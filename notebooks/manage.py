"""Keeps the notebooks honest: writes each `.ipynb` from its paired `.py`, checks the pairs, and
runs them headless.

    python notebooks/manage.py sync                  # .py (edited) -> .ipynb, outputs stripped
    python notebooks/manage.py check                 # pairs agree, outputs stripped, badges
    python notebooks/manage.py run [--quick] [--pictures=docs/notebooks] [--executed=DIR] [NAME ...]

A notebook is a jupytext pair (`formats: ipynb,py:percent`): the `.py` is the readable text
reviewed in diffs, the `.ipynb` what Colab opens; `jupytext --sync` in an editor keeps them
together too. `run` executes each in a fresh kernel (nbclient) and fails on the first error;
`--quick` sets the notebooks' parameters to seconds-long variants (what the tests run), and
`--pictures` saves the figure of each notebook's cell tagged `readme-picture` as
`<dir>/<name>.png` (the README shows them), `--executed` keeps the executed notebooks with
their outputs (never commit those here). Needs the `notebooks` extra.
"""

import argparse
import base64
import os
import pathlib
import sys
import time

import jupytext
import nbclient
import nbformat

DIRECTORY = pathlib.Path(__file__).resolve().parent
REPOSITORY = "ig-captioner/ig-captioner"  # On GitHub: where the Colab badges point.
BADGE = ("[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
         "(https://colab.research.google.com/github/{repository}/blob/main/notebooks/{name}.ipynb)")
PICTURE_TAG = "readme-picture"
PAIRING = {"formats": "ipynb,py:percent"}
# The notebooks' parameters for a seconds-long run (each reads them from the environment).
QUICK_ENV = {"IG_NOTEBOOK_CONFIG": "configs/demo.py:runlocal",
             "IG_NOTEBOOK_RUNS": "standard captioner,IG captioner,CLIP",
             "IG_NOTEBOOK_TOPOLOGIES": "v5e:2x2,v4:2x2x1",
             "IG_NOTEBOOK_CHECKPOINT": "fixture",
             "IG_NOTEBOOK_CONVERTED_CONFIG": "configs/converted.py:runlocal"}


def names(directory: pathlib.Path = DIRECTORY) -> list[str]:
  """The notebooks: stems of the `.ipynb` files and of the `.py` files that are jupytext text."""
  stems = {p.stem for p in directory.glob("*.ipynb")}
  stems |= {p.stem for p in directory.glob("*.py") if p.read_text().startswith("# ---\n# jupyter:")}
  return sorted(stems)


def _cells(notebook) -> list[tuple]:
  return [(c.cell_type, c.source, tuple(c.metadata.get("tags", ()))) for c in notebook.cells]


def sync(name: str) -> pathlib.Path:
  """Writes `<name>.ipynb` from `<name>.py`, without outputs."""
  notebook = jupytext.read(DIRECTORY / f"{name}.py")
  notebook.metadata["jupytext"] = dict(PAIRING)
  notebook.metadata["colab"] = {"provenance": []}
  path = DIRECTORY / f"{name}.ipynb"
  jupytext.write(strip(notebook), path, fmt="ipynb")
  return path


def strip(notebook):
  """The notebook without outputs and execution counts."""
  for cell in notebook.cells:
    if cell.cell_type == "code":
      cell.outputs, cell.execution_count = [], None
    cell.metadata.pop("execution", None)
  return notebook


def problems(name: str, directory: pathlib.Path = DIRECTORY) -> list[str]:
  """What is wrong with a notebook pair, one line each (empty: nothing)."""
  py, ipynb = directory / f"{name}.py", directory / f"{name}.ipynb"
  missing = [p.name for p in (py, ipynb) if not p.exists()]
  if missing:
    return [f"{name}: {missing} missing; a notebook is a .py/.ipynb pair (sync writes the "
            ".ipynb from the .py)"]
  found = []
  text, stored = jupytext.read(py), nbformat.read(ipynb, as_version=4)
  if _cells(text) != _cells(stored):
    found.append(f"{name}: {py.name} and {ipynb.name} disagree; after editing one, run "
                 "`python notebooks/manage.py sync` (from the .py) or `jupytext --sync`")
  if stored.metadata.get("jupytext", {}).get("formats") != PAIRING["formats"]:
    found.append(f"{name}: {ipynb.name} lacks jupytext's pairing metadata ({PAIRING})")
  if any(c.get("outputs") or c.get("execution_count") for c in stored.cells):
    found.append(f"{name}: {ipynb.name} holds outputs; strip them (sync) before committing")
  badge = BADGE.format(repository=REPOSITORY, name=name)
  if not stored.cells or badge not in stored.cells[0].source:
    found.append(f"{name}: the first cell lacks the Colab badge {badge}")
  clone = f'REPOSITORY = "https://github.com/{REPOSITORY}"'
  if not any(clone in c.source for c in stored.cells if c.cell_type == "code"):
    found.append(f"{name}: no set-up cell cloning {REPOSITORY} ({clone})")
  if sum(PICTURE_TAG in c.metadata.get("tags", ()) for c in stored.cells) != 1:
    found.append(f"{name}: tag exactly one cell {PICTURE_TAG!r} (its figure goes in the README)")
  return found


def execute(name: str, env: dict | None = None, timeout: int = 900):
  """Runs `<name>.ipynb` top to bottom in a fresh python3 kernel started in `notebooks/`, with
  `env` added to this process's environment; the executed notebook (nbclient raises
  CellExecutionError, naming the cell, at the first error)."""
  notebook = nbformat.read(DIRECTORY / f"{name}.ipynb", as_version=4)
  client = nbclient.NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                                   resources={"metadata": {"path": str(DIRECTORY)}})
  client.execute(env={**os.environ, **(env or {})})
  return notebook


def images(notebook, tag: str | None = None) -> list[bytes]:
  """The PNG figures the notebook's cells (those tagged `tag`, if given) displayed, in order."""
  return [base64.b64decode(output.data["image/png"])
          for cell in notebook.cells if cell.cell_type == "code"
          and (tag is None or tag in cell.metadata.get("tags", ()))
          for output in cell.get("outputs", ()) if "image/png" in output.get("data", {})]


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("command", choices=("sync", "check", "run"))
  parser.add_argument("names", nargs="*", help="notebooks (default: all)")
  parser.add_argument("--quick", action="store_true", help="seconds-long parameters")
  parser.add_argument("--pictures", help="save each notebook's README figure here")
  parser.add_argument("--executed", help="save the executed notebooks here")
  args = parser.parse_intermixed_args(argv)
  chosen = args.names or names()
  unknown = sorted(set(chosen) - set(names()))
  if unknown:
    parser.error(f"no notebook {unknown}; there are {names()}")
  if args.command == "sync":
    for name in chosen:
      print(f"wrote {sync(name).relative_to(DIRECTORY.parent)}")
    return 0
  if args.command == "check":
    found = [line for name in chosen for line in problems(name)]
    print("\n".join(found) or f"{len(chosen)} notebooks: pairs agree, outputs stripped")
    return 1 if found else 0
  for name in chosen:
    start = time.time()
    notebook = execute(name, QUICK_ENV if args.quick else None)
    print(f"{name}: ran in {time.time() - start:.0f} s, {len(images(notebook))} figures")
    if args.executed:
      pathlib.Path(args.executed).mkdir(parents=True, exist_ok=True)
      nbformat.write(notebook, pathlib.Path(args.executed) / f"{name}.ipynb")
    if args.pictures:
      (picture,) = images(notebook, PICTURE_TAG)[:1] or [None]
      if picture is None:
        print(f"error: {name}'s {PICTURE_TAG!r} cell displayed no figure", file=sys.stderr)
        return 1
      path = pathlib.Path(args.pictures) / f"{name}.png"
      path.parent.mkdir(parents=True, exist_ok=True)
      path.write_bytes(picture)
      print(f"  saved {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
