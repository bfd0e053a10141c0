"""Checkpoints of other codebases as runs of this one (`python -m ig_captioner.convert`): a workdir
with `config.json` and the params at step 0, with their digests, that the evaluator, the
inference API, the notebooks and `config.init_from` take as they take a trained run.

open_clip (`open_clip.py`): CLIP-style ViT two towers, weights from `.safetensors` (or torch
files through `torch.load(weights_only=True)`), CLIP's tokenizer (`data/clip_bpe.py`) and image
statistics carried by the run's config. Checked against open_clip's own outputs in
`tests/unit/test_convert_open_clip.py`.

big_vision (`big_vision.py`): SigLIP two towers and plain ViT image towers from `.npz` files (MAP
pooling, bidirectional text tower pooled at its final position, projection biases), with
big_vision's sticky-EOS SentencePiece tokenization (`data/sticky_eos.py`; the `.model` file is
copied into the run). Checked against big_vision's own outputs in
`tests/unit/test_convert_big_vision.py`.
"""
