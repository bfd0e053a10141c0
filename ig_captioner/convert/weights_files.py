"""Weights files as {name: numpy array}: `.safetensors` natively; torch's `.bin`/`.pt` only with
torch installed and only through `torch.load(weights_only=True)` (never an unrestricted unpickle);
`.npz` (big_vision) with numpy, pickles refused."""

import numpy as np

from ig_captioner import paths
from ig_captioner.convert import safetensors_io

WeightsError = safetensors_io.WeightsError


def _torch_state(path: str) -> dict[str, np.ndarray]:
  try:
    import torch  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  except ImportError:
    raise WeightsError(
        f"{path} is a torch file and torch is not installed: use the model's .safetensors file "
        "(on the Hugging Face hub: open_clip_model.safetensors), or pip install torch") from None
  try:
    with paths.path(path).open("rb") as f:
      loaded = torch.load(f, map_location="cpu", weights_only=True)
  except Exception as e:  # pickle's UnpicklingError for disallowed objects, EOFError, ...
    raise WeightsError(f"{path} could not be read as torch weights ({type(e).__name__}: "
                       f"{str(e).splitlines()[0] if str(e) else ''}); use a .safetensors "
                       "file") from None
  if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
    loaded = loaded["state_dict"]  # A training checkpoint (open_clip's epoch_N.pt).
  if not isinstance(loaded, dict):
    raise WeightsError(f"{path} holds a {type(loaded).__name__}, not a state dict")
  return {k: v.detach().float().numpy() for k, v in loaded.items() if hasattr(v, "detach")}


def _npz(path: str) -> dict[str, np.ndarray]:
  try:
    with paths.path(path).open("rb") as f, np.load(f, allow_pickle=False) as data:
      return {k: data[k] for k in data.files}
  except Exception as e:  # zipfile.BadZipFile, ValueError for pickled members, ...
    raise WeightsError(f"{path} is not a readable .npz file ({type(e).__name__}: {e}); "
                       "download it again") from None


def read(path: str) -> dict[str, np.ndarray]:
  """{name: array} of a weights file, names with a DDP `module.` prefix stripped."""
  if not paths.path(path).exists():
    raise WeightsError(f"--weights={path}: no such file")
  if path.endswith(".safetensors"):
    state = safetensors_io.read(path)
  elif path.endswith((".bin", ".pt", ".pth")):
    state = _torch_state(path)
  elif path.endswith(".npz"):
    state = _npz(path)
  else:
    raise WeightsError(f"--weights={path}: unknown kind of file; give a .safetensors, .npz, "
                       ".bin or .pt file")
  return {k.removeprefix("module."): v for k, v in state.items()}
