"""Small helpers shared by the model backends (kept free of heavy imports)."""

from __future__ import annotations

from pathlib import Path


def resolve_device(device: str | None) -> str:
    """'auto'/None -> 'cuda' when available, else 'cpu'; anything else unchanged."""
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def local_or_hub(path: str, allow_patterns: list[str] | None = None) -> Path:
    """A local checkpoint folder as is; a hub id downloaded (or read from the HF cache)."""
    local = Path(path).expanduser()
    if local.is_dir():
        return local
    if local.exists():
        raise ValueError(f"{path}: expected a checkpoint folder, got a file")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(path, allow_patterns=allow_patterns))
    except Exception as err:  # noqa: BLE001 - re-raised with the path that failed
        raise FileNotFoundError(f"{path}: not a local folder and could not be fetched from the "
                                f"Hugging Face Hub ({type(err).__name__}: {err})") from err


def batches(n: int, size: int):
    for start in range(0, n, size):
        yield start, min(n, start + size)
