"""ig-captioner: Information Gain captioners in JAX/Flax."""

import os

# TensorFlow (imported by TFDS and clu for host-side work) logs verbosely at import; keep errors.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow only reads and writes files here: its oneDNN kernels (and their notice) add nothing.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
