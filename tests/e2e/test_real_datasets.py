"""Real data sets by name (evaluators/catalog.py, data/presets.py), each prepared offline by
its REAL TFDS builder from tiny fake source files (tests/fake_tfds_sources.py), then trained on
or evaluated through our pipeline: imagenet2012, cifar10, cifar100 and fashion_mnist zero-shot,
coco_captions training (one random caption per image per epoch) and retrieval on Karpathy's test
split."""

import collections
import csv
import io
import json
import os

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from ig_captioner import benchmark
from ig_captioner import errors
from ig_captioner import evaluate
from ig_captioner import evaluators
from ig_captioner import inference
from ig_captioner import tasks
from ig_captioner import train
from ig_captioner.data import presets
from ig_captioner.evaluators import catalog
from ig_captioner.data import imagenet_metadata
from ig_captioner.data import prepare
from ig_captioner.data import sources
from ig_captioner.data import tokenizer as tokenizer_lib
from ig_captioner.data import train_mixture
from tests import conftest
from tests import fake_tfds_sources as fake
from tests import helpers
from tests.e2e.test_evaluate import zeroshot_names
from tests.unit.test_protocol_metrics import reference_classification
from tests.unit.test_protocol_metrics import reference_recall

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck"]
# 100 fine names, some with CIFAR-100's underscores; coarse labels are fine % 20.
CIFAR100_NAMES = ["aquarium_fish", "maple_tree", "pickup_truck", "apple"] + [
    f"thing_{i}" for i in range(4, 100)]
CIFAR100_COARSE = [f"group_{i}" for i in range(20)]
TEST_LABELS = {"cifar10": [3, 1, 4, 1, 5], "cifar100": [0, 1, 2, 3, 0],
               "fashion_mnist": [9, 0, 7, 7]}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  """Fake sources written, every data set prepared through `prepare` (ArrayRecord), and a tiny
  captioner config: coco_captions train data, one catalog evaluation per data set."""
  root = str(tmp_path_factory.mktemp("real_datasets"))
  tfds_dir = os.path.join(root, "tfds")
  imagenet = fake.write_imagenet2012(os.path.join(root, "imagenet_manual"))
  coco = fake.write_coco_captions(os.path.join(root, "coco"))
  fake.write_fashion_mnist(os.path.join(root, "fashion_mnist"), [0, 1, 2, 9, 5, 7],
                           TEST_LABELS["fashion_mnist"])
  downloads = dict(coco["downloads"])
  downloads.update(fake.write_cifar10(os.path.join(root, "cifar10"), CIFAR10_NAMES,
                                      [0, 1, 2, 3], TEST_LABELS["cifar10"]))
  downloads.update(fake.write_cifar100(os.path.join(root, "cifar100"), CIFAR100_NAMES,
                                       CIFAR100_COARSE, [0, 1, 2, 3], TEST_LABELS["cifar100"]))

  config = conftest.load_config_module("demo").get_config("runlocal")
  config.data = presets.coco_captions(data_dir=tfds_dir, tokenizer_vocab_size=64)
  config.evals = ml_collections.ConfigDict(dict(
      imagenet=catalog.imagenet_zeroshot(manual_dir=os.path.join(root, "imagenet_manual"),
                                         templates="clip7"),
      coco=catalog.coco_retrieval(),
      cifar10=catalog.evaluation("cifar10"),
      cifar100=catalog.evaluation("cifar100"),
      fashion_mnist=catalog.fashion_mnist_zeroshot(
          manual_dir=os.path.join(root, "fashion_mnist"))))
  with fake.downloads_from(downloads):
    prepare.prepare(config.data)  # coco_captions and its tokenizer (trained on every caption).
    prepare.prepare_evals(config)
  captions_tokenizer = sources.tokenizer(config.data)

  # The captions' tokenizer spells unseen class names letter by letter: the model reads texts
  # with one that also knows the prompts' words, so that prompts stay short.
  prompts = [t.format(c) for c in imagenet_metadata.class_names()
             for t in imagenet_metadata.clip_templates(simple=True)]
  corpus = [c for split in coco["captions"].values() for cs in split.values() for c in cs]
  tokenizer_path = os.path.join(root, "tokenizer.model")
  with open(tokenizer_path, "wb") as f:
    f.write(tokenizer_lib.train(corpus + prompts + CIFAR10_NAMES + CIFAR100_NAMES, 2048))
  config.data.tokenizer = tokenizer_path
  config.model = helpers.tiny_model_config(vocab_size=2048, max_text_len=24)
  config.update(total_steps=2, batch_size=8, checkpoint_every=2, log_every=1)
  for eval_config in config.evals.values():
    eval_config.batch_size = 8  # The fake splits hold 3 to 5 images.
  config.optimizer.warmup_steps = 1
  return dict(root=root, config=config, imagenet=imagenet, coco=coco,
              captions_tokenizer=captions_tokenizer)


@pytest.fixture(scope="module")
def workdir(world):
  """A checkpoint (step 2) of the tiny captioner trained on coco_captions."""
  path = os.path.join(world["root"], "workdir")
  state = train.train(world["config"], path)
  assert int(state.step) == 2
  return path


def evaluate_one(world, workdir, name, tmp_path, monkeypatch):
  """(metrics, evaluator) of `config.evals[name]` alone on the trained checkpoint."""
  config = world["config"].copy_and_resolve_references()
  config.evals = ml_collections.ConfigDict({name: config.evals[name]})
  built = []
  original_build = evaluators.build
  monkeypatch.setattr(evaluators, "build",
                      lambda *args: built.extend(original_build(*args)) or built)
  results = evaluate.evaluate(config, workdir, step=2, output_dir=str(tmp_path))
  (evaluator,) = built
  return results[2], evaluator


def test_coco_tokenizer_is_trained_on_every_caption(world):
  tokenizer = world["captions_tokenizer"]
  for caption in (c for cs in world["coco"]["captions"]["train"].values() for c in cs):
    assert tokenizer.decode(tokenizer.encode(caption, 32)) == caption


def test_coco_train_draws_one_caption_per_image_per_epoch(world):
  config = world["config"].copy_and_resolve_references()
  train_captions = world["coco"]["captions"]["train"]
  owner = {c: image for image, cs in train_captions.items() for c in cs}
  config.batch_size = len(train_captions)  # One batch = one epoch (reshuffled each time).
  tokenizer = sources.tokenizer(config.data)

  def epochs(shuffle_seed, count=6):
    config.data.shuffle_seed = shuffle_seed
    loader = iter(train_mixture.train_loader(config, tokenizer))
    return [[tokenizer.decode(t) for t in next(loader)["tokens"]] for _ in range(count)]

  first = epochs(0)
  picked = collections.defaultdict(set)
  for batch in first:
    assert sorted(owner[c] for c in batch) == sorted(train_captions)  # Each image once.
    for caption in batch:
      picked[owner[caption]].add(caption)
  # Over 6 epochs every image showed several of its 5 captions.
  assert all(len(picked[image]) > 1 for image in train_captions), picked
  assert epochs(0) == first  # Deterministic given the seed...
  assert epochs(1) != first  # ...and another seed draws others.


def test_coco_trains_and_retrieves_on_karpathy_test_with_all_captions(world, workdir, tmp_path,
                                                                      monkeypatch):
  metrics, evaluator = evaluate_one(world, workdir, "coco", tmp_path, monkeypatch)
  test_captions = world["coco"]["captions"]["test"]
  distinct = {c for cs in test_captions.values() for c in cs}
  relevant_IxU = evaluator._relevant_IxU  # pylint: disable=protected-access
  assert relevant_IxU.shape == (len(test_captions), len(distinct)) == (3, 15)
  assert (relevant_IxU.sum(1) == 5).all() and (relevant_IxU.sum(0) == 1).all()
  names = {f"retrieval/coco/{d}{s}" for k in (1, 5, 10)
           for d, ss in ((f"i2t_r{k}", ("_alpha0.0", "_alpha1.0")), (f"t2i_r{k}", ("",)),
                         (f"text_retrieval_recall@{k}", ("_alpha0.0", "_alpha1.0")),
                         (f"image_retrieval_recall@{k}", ("",))) for s in ss}
  assert set(metrics) == names
  for name, value in metrics.items():  # Recalls over 3 image or 15 text queries.
    queries = 3 if "/i2t" in name or "/text_retrieval" in name else 15
    assert 0 <= value <= 1 and abs(value * queries - round(value * queries)) < 1e-6, name
  assert metrics["retrieval/coco/t2i_r5"] == 1.0  # 5 of 3 candidate images: always found.


def test_imagenet2012_zeroshot_prompts_read_human_class_names(world, workdir, tmp_path,
                                                             monkeypatch):
  metrics, evaluator = evaluate_one(world, workdir, "imagenet", tmp_path, monkeypatch)
  assert len(evaluator.class_names) == 1000 and evaluator.class_names[:2] == ["tench", "goldfish"]
  assert "a photo of the small tench." in evaluator.prompts[:7]
  assert "itap of a goldfish." in evaluator.prompts[7:14]
  assert not any("n0" in p for p in evaluator.prompts)  # No WordNet id.
  # The ready 80-template entry holds CLIP's "a photo of a {}." (not run here: 80k prompts).
  assert "a photo of a {}." in catalog.imagenet_zeroshot().templates
  assert len(catalog.imagenet_zeroshot().templates) == 80

  # The validation labels are TFDS's for the fake files' names (its validation_labels.txt).
  builder = tfds.builder("imagenet2012", data_dir=world["config"].data.data_dir)
  wnids = builder.info.features["label"].names
  shipped = tfds.core.tfds_path("datasets/imagenet2012/validation_labels.txt").read_text().split()
  expected = dict(zip(sorted(world["imagenet"]["validation"]), shipped))
  source = builder.as_data_source(split="validation")
  assert {r["file_name"].decode(): wnids[r["label"]] for r in source} == expected
  assert set(metrics) == zeroshot_names("imagenet", (0.0, 0.5, 1.0))
  assert all(v * 4 == round(v * 4) for k, v in metrics.items()
             if "/acc" in k)  # Over the 4 fake images.


@pytest.mark.parametrize("name,class_names", [
    ("cifar10", CIFAR10_NAMES),
    ("cifar100", ["aquarium fish", "maple tree", "pickup truck", "apple"] + [
        f"thing {i}" for i in range(4, 100)]),
    ("fashion_mnist", ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                       "Sneaker", "Bag", "Ankle boot"])])
def test_small_classification_sets_zeroshot(world, workdir, tmp_path, monkeypatch, name,
                                            class_names):
  metrics, evaluator = evaluate_one(world, workdir, name, tmp_path, monkeypatch)
  assert evaluator.class_names == class_names
  assert evaluator.prompts[0] == f"a photo of a {class_names[0]}."
  data = ml_collections.ConfigDict(dict(world["config"].data.to_dict(),
                                        **world["config"].evals[name].data.to_dict()))
  source = sources.open_split(data, "test")
  labels = [int(source[i]["label"]) for i in range(len(source))]
  assert sorted(labels) == sorted(TEST_LABELS[name])
  n = len(labels)
  assert set(metrics) == zeroshot_names(name, (0.0, 0.5, 1.0))
  assert all(0 <= v <= 1 and (v * n == round(v * n) or "/acc" not in k)
             for k, v in metrics.items())


def test_fashion_mnist_without_local_files_names_them(world, tmp_path):
  config = ml_collections.ConfigDict(dict(data=world["config"].data, evals=dict(
      fashion=catalog.fashion_mnist_zeroshot(data_dir=str(tmp_path),
                                             manual_dir=str(tmp_path / "missing")))))
  with pytest.raises(AssertionError, match="(?s)missing does not exist.*train-images-idx3-ubyte"):
    prepare.prepare_evals(config)


def test_class_names_file_must_name_every_class(world, tmp_path):
  data = world["config"].data.copy_and_resolve_references()
  data.update(catalog.cifar_zeroshot().data.to_dict())
  names_file = tmp_path / "names.txt"
  names_file.write_text("\n".join(f"kind {i}" for i in range(10)) + "\n")
  assert sources.readable_class_names(data, names=str(names_file))[9] == "kind 9"
  names_file.write_text("plane\ncar\n")
  with pytest.raises(sources.DataError, match="has 2 class names but data set cifar10 has 10"):
    sources.readable_class_names(data, names=str(names_file))
  with pytest.raises(sources.DataError, match="has 1000 class names .* has 10"):
    sources.readable_class_names(data, names="imagenet")


# --------------------------------------------------------- CLIP_benchmark's protocol ---
BENCHMARK_SETS = ("cifar10", "imagenet1k", "mscoco_captions")


def test_clip_benchmark_results_equal_an_independent_computation(world, workdir, tmp_path):
  """`python -m ig_captioner.benchmark` on the fake-source builds: one CLIP_benchmark-format
  file per data set and alpha, whose metrics equal the definitions (tests/unit/
  test_protocol_metrics.py's numpy rendering) applied to the inference API's scores."""
  data_dir = world["config"].data.data_dir
  manual_dir = os.path.join(world["root"], "imagenet_manual")
  output, logs = tmp_path / "cb", []
  written = benchmark.benchmark(workdir, BENCHMARK_SETS, data_dir=data_dir,
                                manual_dir=manual_dir, output=str(output), alphas=(0.0, 1.0),
                                batch_size=8, max_templates=2, log=logs.append)
  assert list(written) == list(BENCHMARK_SETS) and len(logs) == 3 and "ETA" in logs[-1]
  run = inference.load_run(workdir)
  config = run.config.copy_and_resolve_references()
  config.evals = ml_collections.ConfigDict(benchmark.eval_entries(
      BENCHMARK_SETS, data_dir, manual_dir, (0.0, 1.0), 8, max_templates=2))
  for name in BENCHMARK_SETS:
    records = {}
    for path in written[name]:
      record = json.loads(open(path, encoding="utf-8").read())
      assert os.path.basename(path) == (f"{name}_workdir-step2_captioner-{record['scoring']}_en_"
                                        f"{record['task']}.json")
      assert record["dataset"] == name and record["language"] == "en"
      records[record["scoring"]] = record["metrics"]
    assert sorted(records) == ["ig_alpha0.0", "ig_alpha1.0"]
    task = tasks.task(config, name, kind=config.evals[name].type)
    examples = task.examples()
    if name == "mscoco_captions":
      captions = [c for texts in examples.texts_B for c in texts]
      image_N = np.repeat(np.arange(len(examples.texts_B)), [len(t) for t in examples.texts_B])
      positive_IxN = np.arange(len(examples.texts_B))[:, None] == image_N[None]
      for alpha in (0.0, 1.0):
        scores_IxN = run.retrieval_scores(examples.images_BxHxWx3, captions, alpha)
        expected = {f"text_retrieval_recall@{k}": reference_recall(scores_IxN, positive_IxN, k)
                    for k in (1, 5, 10)}
        expected.update({f"image_retrieval_recall@{k}": reference_recall(
            scores_IxN.T, positive_IxN.T, k) for k in (1, 5, 10)})
        assert records[f"ig_alpha{alpha}"] == pytest.approx(expected, abs=1e-12)
      continue
    assert len(task.templates) == 2
    scores = run.classify(examples.images_BxHxWx3, task.class_names, task.templates)
    for alpha in (0.0, 1.0):
      expected = reference_classification(scores["ig"][alpha]["scores_BxC"], examples.labels_B)
      assert records[f"ig_alpha{alpha}"] == pytest.approx(expected, abs=1e-12), (name, alpha)
    assert set(records["ig_alpha1.0"]) == {"acc1", "acc5", "mean_per_class_recall"}

  # --skip_existing finds every file; the built table has a row per scoring.
  assert benchmark.benchmark(workdir, BENCHMARK_SETS, data_dir=data_dir, manual_dir=manual_dir,
                             output=str(output), skip_existing=True, batch_size=8,
                             log=logs.append) == {}
  table_csv, table_md = benchmark.build_table([str(output)])
  rows = list(csv.DictReader(io.StringIO(table_csv)))
  assert len(rows) == 6 and {"acc1", "image_retrieval_recall@5", "model_fullname"} <= set(rows[0])
  assert table_md.count("| captioner-ig_alpha") == 2


def test_clip_benchmark_lists_data_sets_not_prepared_with_their_commands(world, workdir):
  with pytest.raises(errors.ConfigError) as raised:
    benchmark.benchmark(workdir, ["cifar10", "mnist", "vtab/pets"],
                        data_dir=world["config"].data.data_dir)
  message = str(raised.value)
  assert message.startswith("2 of 3 data sets are not prepared (nothing is downloaded")
  assert "mnist (TFDS mnist at " in message and "vtab/pets (TFDS oxford_iiit_pet at " in message
  assert (f"python -m ig_captioner.benchmark --prepare --datasets=mnist "
          f"--data_dir={world['config'].data.data_dir}") in message
  with pytest.raises(errors.ConfigError, match="'imagenet-a' is not supported here: its classes"):
    benchmark.benchmark(workdir, ["imagenet_robustness", "imagenet-a"])
