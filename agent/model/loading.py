"""Building the models a worker runs: `--model dummy|dummy:tiny|dummy:full|local:DIR|hf[:REPO]`.

The LM runs in bfloat16 on CUDA and float32 on the CPU; Mimi always runs in float32, as upstream
does (its nearest-codebook search gives other codes in bfloat16). `weights="fp8"` quantises the
linear layers of the LM's two transformers to FP8 at load (`agent.model.fp8`), from those weights. A dummy model has random
weights (as vLLM's `--load-format dummy`): full size for GPU benchmarks, tiny for CPU machines.
It says so loudly, in the logs and in every output that carries `Models.name`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from typing import Literal

import torch

from agent.model.checkpoint import dummy_lm, load_lm
from agent.model.hub import REPO_ID, fetch_model_files
from agent.model.lm import AGENT_CODEBOOKS, LM, LMConfig
from agent.model.mimi import Mimi, MimiConfig
from agent.model.tokenizer import TextTokenizer, wrap_role

log = logging.getLogger(__name__)

WeightsDtype = Literal["bf16", "fp8"]  # bf16: the LM's dtype (float32 on the CPU); fp8: e4m3, scaled
WEIGHTS_DTYPES: tuple[WeightsDtype, ...] = ("bf16", "fp8")

# The tiny dummy has the reference's sizes but a real context, so real role prompts fit.
TINY_CONTEXT = 3000
CONFIG_FILE = "config.json"


class ModelSpecError(ValueError):
    pass


@dataclass
class Models:
    name: str  # what was loaded, e.g. "hf:nvidia/personaplex-7b-v1" or "dummy:tiny (RANDOM WEIGHTS)"
    mimi: Mimi
    lm: LM
    tokenizer: TextTokenizer | DummyTokenizer
    voices_archive: Path | None  # the released voices (voices.tgz); None for a dummy model
    weights: WeightsDtype = "bf16"  # of the LM's transformers' linear layers

    @property
    def dummy(self) -> bool:
        return isinstance(self.tokenizer, DummyTokenizer)

    @property
    def device(self) -> torch.device:
        return self.lm.text_linear.weight.device


class DummyTokenizer:
    """A stand-in for the sentencepiece model of a dummy LM: one token per word, by hash."""

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def encode_role(self, text: str) -> list[int]:
        if not text:
            return []
        first = 4  # after PersonaPlex's special ids (0 EPAD, 1 BOS, 2 EOS, 3 PAD)
        return [first + int(hashlib.sha256(word.encode()).hexdigest(), 16) % (self.vocab_size - first)
                for word in wrap_role(text).split()]

    def piece_text(self, token: int) -> str:
        return "" if token < 4 else f" w{token}"

    def decode(self, tokens) -> str:
        return "".join(self.piece_text(t) for t in tokens).strip()


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_models(spec: str, device: torch.device | str | None = None, mimi_codebooks: int = AGENT_CODEBOOKS,
                weights: WeightsDtype = "bf16") -> Models:
    """The models named by `spec`; see the module docstring. Raises ModelSpecError on a bad spec.

    `mimi_codebooks` is the codebooks Mimi encodes (the LM reads the first 8): 32 when the
    recogniser reads the same encode. A dummy Mimi gets as many; a checkpoint must hold them.
    `weights` is the LM's transformers' linear layers: as loaded, or quantised to FP8.
    """
    if weights not in WEIGHTS_DTYPES:
        raise ModelSpecError(f"unknown weights {weights!r}: use one of {', '.join(WEIGHTS_DTYPES)}")
    models = _load(spec, torch.device(device) if device is not None else default_device(), mimi_codebooks)
    if weights == "fp8":
        models.lm.to_fp8_weights()
        if models.device.type == "cuda":
            torch.cuda.empty_cache()  # the bf16 weights' memory, for the KV rings
    models.weights = weights
    return models


def _load(spec: str, device: torch.device, mimi_codebooks: int) -> Models:
    lm_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if spec == "dummy":
        spec = "dummy:full" if device.type == "cuda" else "dummy:tiny"
    if spec in ("dummy:tiny", "dummy:full"):
        return _dummy(spec.split(":")[1], device, lm_dtype, mimi_codebooks)
    if spec == "hf" or spec.startswith(("hf:", "local:")):
        files = fetch_model_files(REPO_ID if spec == "hf" else spec.removeprefix("hf:"))
        mimi_config, lm_config = _configs(files.lm.parent / CONFIG_FILE)
        if mimi_codebooks > mimi_config.total_codebooks:
            raise ModelSpecError(f"Mimi has {mimi_config.total_codebooks} codebooks, {mimi_codebooks} asked for")
        mimi_config = dataclasses.replace(mimi_config, num_codebooks=mimi_codebooks)
        log.info("loading model", extra={"model": spec, "device": str(device)})
        mimi = Mimi.from_safetensors(files.mimi, mimi_config, device=device)
        lm = load_lm(files.lm, lm_config, device=device, dtype=lm_dtype)
        return Models(spec, mimi, lm, TextTokenizer(files.tokenizer), files.voices)
    raise ModelSpecError(f"unknown model {spec!r}: use dummy, dummy:tiny, dummy:full, local:DIR or hf[:REPO]")


def _configs(config_file: Path) -> tuple[MimiConfig, LMConfig]:
    """The released model's sizes, unless the folder has a config.json of upstream arguments
    ({"mimi": ..., "lm": ...}, as the reference vectors do) describing other sizes."""
    if not config_file.is_file():
        return MimiConfig.full(), LMConfig.personaplex_7b()
    try:
        config = json.loads(config_file.read_text())
        return MimiConfig.from_upstream(config["mimi"]), LMConfig.from_upstream(config["lm"])
    except (ValueError, KeyError, TypeError) as error:
        raise ModelSpecError(f"{config_file}: not a model config ({error})") from error


def _dummy(size: str, device: torch.device, lm_dtype: torch.dtype, mimi_codebooks: int) -> Models:
    if size == "tiny":
        mimi_config, lm_config = MimiConfig.tiny(), dataclasses.replace(LMConfig.tiny(), context=TINY_CONTEXT)
    else:
        mimi_config, lm_config = MimiConfig.full(), LMConfig.personaplex_7b()
    mimi_config = dataclasses.replace(mimi_config, num_codebooks=mimi_codebooks,
                                      total_codebooks=max(mimi_config.total_codebooks, mimi_codebooks))
    name = f"dummy:{size} (RANDOM WEIGHTS)"
    log.warning("running a DUMMY model with random weights: its speech is noise", extra={"model": name})
    mimi = Mimi.dummy(mimi_config, device=device)
    lm = dummy_lm(lm_config, device=device, dtype=lm_dtype)
    return Models(name, mimi, lm, DummyTokenizer(lm_config.text_card), None)


def model_cache_key(models: Models) -> str:
    """A file-name-safe name of the model, for caches that belong to one model (voice prompts)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", models.name.split(" ")[0])
