"""How `python -m ig_captioner.benchmark` splits an evaluator's metrics into CLIP_benchmark
result files, one per scoring: two towers, caption scoring per alpha, both (CoCa), and the
prompt ensembles' names; and its data set names and collections."""

import pytest

from ig_captioner import benchmark
from ig_captioner import errors
from ig_captioner.evaluators import benchmark_sets


def test_classification_metrics_split_by_scoring_and_ensemble():
  stem = "zeroshot/cb_cifar10/"
  metrics = {stem + "acc1": 0.5, stem + "acc5": 0.9, stem + "acc1_alpha1.0": 0.4,
             stem + "zpe/acc1_alpha1.0": 0.45, stem + "zpe/acc1": 0.55,
             stem + "descriptions/logmeanexp/mean_per_class_recall_alpha0.0": 0.3}
  assert benchmark.scoring_results("cifar10", metrics, has_embeddings=True) == {
      "embedding": {"acc1": 0.5, "acc5": 0.9}, "ig_alpha1.0": {"acc1": 0.4},
      "ig_alpha1.0+zpe": {"acc1": 0.45}, "embedding+zpe": {"acc1": 0.55},
      "ig_alpha0.0+descriptions+logmeanexp": {"mean_per_class_recall": 0.3}}


@pytest.mark.parametrize("has_embeddings", [False, True])
def test_retrieval_image_queries_go_with_the_scoring_that_ranked_them(has_embeddings):
  stem = "retrieval/cb_mscoco_captions/"
  metrics = {stem + "i2t_r1_alpha0.0": 0.9, stem + "t2i_r1": 0.8,  # The merged variant: out.
             stem + "text_retrieval_recall@1_alpha0.0": 0.3,
             stem + "text_retrieval_recall@1_alpha1.0": 0.35,
             stem + "image_retrieval_recall@1": 0.2}
  if has_embeddings:
    metrics[stem + "text_retrieval_recall@1"] = 0.6
  out = benchmark.scoring_results("mscoco_captions", metrics, has_embeddings)
  if has_embeddings:  # Two towers ranked the images; caption scoring ranked only texts.
    assert out == {"embedding": {"text_retrieval_recall@1": 0.6,
                                 "image_retrieval_recall@1": 0.2},
                   "ig_alpha0.0": {"text_retrieval_recall@1": 0.3},
                   "ig_alpha1.0": {"text_retrieval_recall@1": 0.35}}
  else:  # Caption scoring's image ranking does not depend on alpha: in every alpha's file.
    assert out == {"ig_alpha0.0": {"text_retrieval_recall@1": 0.3,
                                   "image_retrieval_recall@1": 0.2},
                   "ig_alpha1.0": {"text_retrieval_recall@1": 0.35,
                                   "image_retrieval_recall@1": 0.2}}


def test_data_set_names_and_collections():
  assert benchmark_sets.expand(["retrieval", "cifar10", "imagenet_robustness", "cifar10"]) == [
      "mscoco_captions", "cifar10", "imagenetv2", "imagenet_sketch"]
  entry = benchmark_sets.eval_config("vtab/pets", data_dir="/d")
  assert (entry.data.name, entry.split, entry.class_names) == (
      "oxford_iiit_pet", "test", "clip_benchmark:pets")
  assert entry.templates == ("a photo of a {}, a type of pet.",)
  assert len(benchmark_sets.eval_config("imagenet1k").templates) == 80
  assert benchmark_sets.eval_config("mscoco_captions").type == "retrieval"
  with pytest.raises(errors.ConfigError, match="'flickr30k' is not supported here: TFDS has no"):
    benchmark_sets.expand(["flickr30k"])
  with pytest.raises(errors.ConfigError, match="'cifar11' is not a CLIP_benchmark data set"):
    benchmark_sets.expand(["cifar11"])
