"""Packaging for ig-captioner. Versions are pinned to a set checked to install and run together."""

import setuptools

INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "tensorflow-datasets==4.9.10",
    "array-record==0.8.6",
    "importlib-resources==7.1.0",  # TFDS builders need it (via etils.epath) but do not declare it.
    "grain==0.2.18",
    "etils==1.15.0",  # epath: every file path, local or gs:// (ig_captioner/paths.py).
    "pyarrow==26.0.1",  # img2dataset's parquet shards (ig_captioner/data/web_shards.py).
    "ml-collections==1.1.0",
    "einops==0.8.2",
    "clu==0.0.12",
    "sentencepiece==0.2.3",
    # CLIP's BPE tokenizer for runs converted from open_clip (ig_captioner/data/clip_bpe.py):
    # ftfy's text repair and `regex`'s Unicode classes, as open_clip's tokenizer uses them.
    "ftfy==6.3.1",
    "regex==2026.12.2",
    # clu's TensorBoard writer and TFDS data preparation need TensorFlow (CPU build is enough).
    "tensorflow-cpu==2.21.0",
    "tensorboard==2.21.0",
    # The embedded demo data set is built from scikit-learn's bundled digits images.
    "scikit-learn==1.9.1",
    "numpy>=2.0,<3",
]

setuptools.setup(
    name="ig-captioner",
    version="0.2.0",
    description="Information Gain captioners in JAX/Flax: pretraining and zero-shot evaluation.",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["ig_captioner", "ig_captioner.*"]),
    package_data={"ig_captioner.data": ["metadata/*.txt", "metadata/*.md", "metadata/*.gz",
                                          "metadata/*.json"],
                  "ig_captioner.convert": ["*.json"]},
    install_requires=INSTALL_REQUIRES,
    # plots: the study's figures (configs/ig_study.py); the tests draw them too.
    # captioning: CIDEr-D and BLEU-4 of the captioning evaluator (pycocoevalcap's pure-Python
    # scorers).
    # notebooks: what runs notebooks/ headless (notebooks/manage.py,
    # tests/e2e/test_notebooks.py) and keeps their .py/.ipynb pairs in sync; Colab has its own
    # kernel and needs only `plots`.
    # planner: libtpu, so that `python -m ig_captioner.tools.plan` compiles for TPU topologies on
    # any machine (the version jax[tpu]==0.10.2 pins).
    extras_require={"plots": ["matplotlib==3.11.2"],
                    "captioning": ["pycocoevalcap==1.2"],
                    "planner": ["libtpu==0.0.42.1"],
                    "notebooks": ["matplotlib==3.11.2", "nbclient==0.11.0", "nbformat==5.11.1",
                                  "ipykernel==7.4.0", "jupytext==1.19.6"],
                    # pytest-xdist: the two workers of `bash launch/tests.sh`; uv: xpk's own
                    # virtual environment (launch/xpk_venv.sh) in seconds instead of ~40.
                    "test": ["pytest==9.0.3", "pytest-xdist==3.8.0", "matplotlib==3.11.2",
                             "pycocoevalcap==1.2", "uv==0.13.9"]},
    entry_points={"console_scripts": [
        "ig-prepare=ig_captioner.data.prepare:main",
        "ig-train=ig_captioner.train:main",
        "ig-evaluate=ig_captioner.evaluate:main",
        "ig-sweep=ig_captioner.tools.sweep:main",
        "ig-plan=ig_captioner.tools.plan:main",
    ]},
)
