"""The evaluator process on real checkpoints: metric names, its own mesh, no double evaluation."""

import shutil

import pytest

from ig_captioner import checkpointing
from ig_captioner import evaluate
from ig_captioner import metric_files
from ig_captioner.evaluators import zeroshot


def retrieval_names(captioner: bool) -> set[str]:
  """Recall@{1,5,10} both ways, merged and CLIP_benchmark's; captioners' image->text per alpha
  (text->image cannot depend on it)."""
  suffixes = [f"_alpha{a}" for a in (0.0, 1.0)] if captioner else [""]
  return {f"retrieval/digits_retrieval/{d}{s}" for k in (1, 5, 10)
          for d, ss in ((f"i2t_r{k}", suffixes), (f"t2i_r{k}", [""]),
                        (f"text_retrieval_recall@{k}", suffixes),
                        (f"image_retrieval_recall@{k}", [""])) for s in ss}


def zeroshot_names(data_set: str, alphas=None, stem: str = "") -> set[str]:
  """CLIP_benchmark's classification metrics (10 classes: acc5 too), per alpha if given."""
  suffixes = [f"_alpha{a}" for a in alphas] if alphas else [""]
  return {f"zeroshot/{data_set}{stem}/{m}{s}" for m in ("acc1", "acc5", "mean_per_class_recall")
          for s in suffixes}


@pytest.fixture
def trained_workdir(trained_runlocal, tmp_path):
  """A copy of the session's trained runlocal captioner (the evaluator writes into it)."""
  shutil.copytree(trained_runlocal, tmp_path / "run")
  return str(tmp_path / "run")


def test_evaluates_every_checkpoint_once_on_its_own_mesh(runlocal_config, trained_workdir,
                                                         monkeypatch):
  runlocal_config.eval_mesh.update(data=2, fsdp=2, tensor=2)  # Trained on data=8.
  text_only_calls = []
  original_init = zeroshot.Evaluator.__init__

  def counting_init(self, *args, **kwargs):
    original_init(self, *args, **kwargs)
    inner = self._text_only
    self._text_only = lambda *args: (text_only_calls.append(self.name), inner(*args))[1]
  monkeypatch.setattr(zeroshot.Evaluator, "__init__", counting_init)

  results = evaluate.evaluate(runlocal_config, trained_workdir, poll_interval_s=0.1, timeout_s=5)
  assert sorted(results) == [3, 6]
  names = (zeroshot_names("digits", (0.0, 0.5, 1.0)) | zeroshot_names("digits_val", (0.0, 0.5, 1.0))
           | retrieval_names(captioner=True))
  for metrics in results.values():
    assert set(metrics) == names
    assert all(0.0 <= v <= 1.0 for v in metrics.values())
  # log P(t) ran once per checkpoint and data set, not once per image batch (500 images here).
  assert sorted(text_only_calls) == sorted(["digits", "digits_val"] * 2)
  rows = metric_files.read_jsonl(metric_files.jsonl_path(trained_workdir, "eval"))
  assert [r["step"] for r in rows] == [3, 6]

  # A restarted evaluator finds nothing new to do.
  assert evaluate.evaluate(runlocal_config, trained_workdir, poll_interval_s=0.1,
                           timeout_s=5) == {}
  assert len(metric_files.read_jsonl(metric_files.jsonl_path(trained_workdir, "eval"))) == 2


def test_missing_step_is_a_clear_error(runlocal_config, trained_workdir):
  with pytest.raises(checkpointing.CheckpointError, match="no checkpoint for step 5.*\\[3, 6\\]"):
    evaluate.evaluate(runlocal_config, trained_workdir, step=5)
