"""MODEL_NAME found before anything slow starts: a local checkpoint directory that is missing is
named as such, and a hub name is looked up in the local Hugging Face cache first, then fetched
at most once, so a host without the network gets one line instead of minutes of retries.

    ensure_model(settings.model_name)   # raises ModelUnavailable with the line to print
"""

from __future__ import annotations

import logging
from pathlib import Path

from bot.core.fatal import Fatal

log = logging.getLogger(__name__)

# What loading a GPT-2 checkpoint reads (not the TF, Flax, ONNX or Rust copies a hub repo holds).
CHECKPOINT_FILES = ["*.json", "*.safetensors", "*.txt"]


class ModelUnavailable(Fatal):
    """MODEL_NAME cannot be loaded; the message says why and what to do."""


def looks_like_path(name: str) -> bool:
    """A directory, not a hub id ("gpt2", "org/name"): absolute, relative with a dot, under
    "~", deeper than org/name, or an existing directory."""
    return (name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name
            or Path(name).is_dir())


def ensure_model(name: str) -> None:
    """Raise ModelUnavailable unless `name` loads without further network: a directory with
    config.json, or a hub name now in the local cache. Once it is there, the process stays
    offline (no update checks that a host without the network would retry for minutes)."""
    if looks_like_path(name):
        path = Path(name).expanduser()
        if not (path / "config.json").is_file():
            what = "has no config.json" if path.is_dir() else "is no directory"
            raise ModelUnavailable(f"MODEL_NAME={name} {what}: point it at a checkpoint "
                                   "directory (config.json, the weights and the tokenizer "
                                   "files) or use a hub name such as gpt2")
        return
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        snapshot_download(name, allow_patterns=CHECKPOINT_FILES, local_files_only=True)
    except HFValidationError:
        raise ModelUnavailable(f"MODEL_NAME={name} is neither a hub name (gpt2, distilgpt2, "
                               "gpt2-medium) nor a directory") from None
    except LocalEntryNotFoundError:
        _download_once(name, constants)
    constants.HF_HUB_OFFLINE = True  # read by huggingface_hub and transformers at each call


def _download_once(name: str, constants) -> None:
    if constants.HF_HUB_OFFLINE:
        raise ModelUnavailable(f"MODEL_NAME={name} is not in the local Hugging Face cache "
                               f"({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE is set: "
                               f"download it once (`hf download {name}`) or set MODEL_NAME to "
                               "a checkpoint directory")
    from huggingface_hub import snapshot_download

    log.info("MODEL_NAME=%s is not in the local cache: downloading it once", name)
    try:
        snapshot_download(name, allow_patterns=CHECKPOINT_FILES)
    except Exception as error:  # any failure of the one attempt ends in the same advice
        raise ModelUnavailable(
            f"MODEL_NAME={name} is not in the local Hugging Face cache "
            f"({constants.HF_HUB_CACHE}) and downloading it failed "
            f"({type(error).__name__}): download it once where huggingface.co is reachable "
            f"(`hf download {name}`, into HF_HOME) or set MODEL_NAME to a checkpoint "
            "directory") from None
