"""The package's layers, read from the source: imports point down only, peers do not import each
other, there is no import cycle, and the names that have one home stay there.

    python -m tests.unit.test_layers      # prints each module's layer and what it imports

Layers, bottom to top (a module may import its own layer's modules and any below):
  foundation  errors, paths, token ids, sharding, config loading, checkpoints, metrics, ...
  data | models                 (peers: neither imports the other)
  scoring
  objectives | evaluators       (peers)
  assembly    experiment, train, evaluate, inference, tasks, recipes, benchmark
  tools       sweep, launchers, planner, study report
"""

import ast
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE = os.path.join(REPO, "ig_captioner")

# Top-level module or subpackage -> (layer number, peer group).
LAYERS = {
    **{name: (0, "foundation") for name in (
        "__init__", "errors", "paths", "tree_paths", "token_ids", "registry", "config_lib",
        "console", "cli", "sharding", "metric_files", "metric_writing", "multihost", "preemption",
        "distributed", "optimizer", "train_state", "checkpoint_integrity", "checkpointing",
        "step_flops", "accelerators", "profiling")},
    "data": (1, "data"), "models": (1, "models"),
    "scoring": (2, "scoring"),
    "objectives": (3, "objectives"), "evaluators": (3, "evaluators"),
    **{name: (4, "assembly") for name in (
        "experiment", "train", "evaluate", "inference", "tasks", "recipes", "init_from",
        "benchmark")},
    "tools": (5, "tools"), "convert": (5, "convert"),
}


def modules() -> dict[str, str]:
  """{dotted module name: file path} of the package."""
  out = {}
  for root, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(root, name)
        rel = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
        out[rel.removesuffix(".__init__") if name == "__init__.py" else rel] = path
  return out


def imports(path: str, known: set[str]) -> set[str]:
  """The package's modules that the file at `path` imports (anywhere in it)."""
  tree = ast.parse(open(path, encoding="utf-8").read())
  found = set()
  for node in ast.walk(tree):
    names = []
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
    for name in names:
      # The longest known module the name starts with (`from pkg import mod` names mod).
      while name and name not in known:
        name = name.rpartition(".")[0]
      if name:
        found.add(name)
  return found


def layer(module: str) -> tuple[int, str]:
  parts = module.split(".")
  key = parts[1] if len(parts) > 1 else "__init__"
  if key not in LAYERS:
    raise AssertionError(f"{module} is in no layer: add it to tests/unit/test_layers.py LAYERS")
  return LAYERS[key]


def graph() -> dict[str, set[str]]:
  mods = modules()
  return {m: imports(p, set(mods)) - {m} for m, p in mods.items()}


def test_imports_point_down_and_peers_stay_apart():
  wrong = []
  for module, deps in graph().items():
    level, group = layer(module)
    for dep in deps:
      if dep == "ig_captioner":
        continue  # The package's __init__ (environment set-up) runs first anyway.
      dep_level, dep_group = layer(dep)
      if dep_level > level or (dep_level == level and dep_group != group):
        wrong.append(f"{module} ({group}) imports {dep} ({dep_group})")
  assert not wrong, "\n".join(sorted(wrong))


def test_no_import_cycles():
  edges = graph()
  state, cycles = {}, []

  def visit(module, stack):
    state[module] = "open"
    for dep in sorted(edges.get(module, ())):
      if state.get(dep) == "open":
        cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
      elif dep not in state:
        visit(dep, stack + [dep])
    state[module] = "done"

  for module in sorted(edges):
    if module not in state:
      visit(module, [module])
  assert not cycles, "\n".join(cycles)


def _string_constants(path: str):
  tree = ast.parse(open(path, encoding="utf-8").read())
  docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body
                and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
  for node in ast.walk(tree):
    if (isinstance(node, ast.Constant) and isinstance(node.value, str)
        and id(node) not in docstrings):
      yield node.lineno, node.value


def test_logical_axis_names_live_in_sharding_only():
  source = open(os.path.join(PACKAGE, "sharding.py"), encoding="utf-8").read()
  names = set(re.findall(r'^[A-Z_]+ = "([a-z_]+)"', source, re.MULTILINE))
  assert {"embed", "mlp", "activation_batch", "activation_vocab"} <= names
  # The converters read other codebases' configs, whose keys may spell an axis name ('heads').
  found = [f"{os.path.relpath(p, REPO)}:{line}: {value!r}" for m, p in modules().items()
           if not p.endswith("sharding.py") and not m.startswith("ig_captioner.convert")
           for line, value in _string_constants(p) if value in names]
  assert not found, "\n".join(found)


def test_data_source_kinds_are_named_in_one_place():
  allowed = {os.path.join(PACKAGE, "data", f) for f in ("sources.py", "web_shards.py")}
  found = [f"{os.path.relpath(p, REPO)}:{line}" for p in modules().values()
           if p not in allowed for line, value in _string_constants(p)
           if value == "web_shards"]
  assert not found, "\n".join(found)


def test_shared_plugin_code_is_public_and_named_base():
  for package in ("models", "objectives", "evaluators"):
    names = os.listdir(os.path.join(PACKAGE, package))
    assert "base.py" in names, package
    assert not [n for n in names if n.startswith("_") and n != "__init__.py"
                and n.endswith(".py")], package


if __name__ == "__main__":
  for module, deps in sorted(graph().items()):
    print(f"{layer(module)[0]} {module}: {', '.join(sorted(deps)) or '-'}")
