"""Building the caller's recogniser: `--stt dummy|dummy:tiny|dummy:full|local:DIR|hf[:REPO]`.

`hf` is `kyutai/stt-1b-en_fr` (public: no token needed); `hf:kyutai/stt-2.6b-en` the larger one.
A released repository, or a local folder laid out as one, holds config.json (the LM arguments,
`stt_config`, and the names of the weights and tokenizer files) beside those files. Its Mimi is
the agent's (the same checkpoint), so the recogniser reads the codes the agent's Mimi computes.
The LM runs in bfloat16 on CUDA and float32 on the CPU. A dummy has random weights and says so
loudly: full size (the 1b's) for GPU benchmarks, tiny for CPU machines.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from agent.model.checkpoint import check_weights
from agent.model.hub import LOCAL_PREFIX, ModelFilesError, check_safetensors, hub_file
from agent.model.loading import DummyTokenizer, ModelSpecError, default_device
from agent.model.stt import SttConfig, SttLM
from agent.model.tokenizer import TextTokenizer

log = logging.getLogger(__name__)

STT_REPO_ID = "kyutai/stt-1b-en_fr"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"  # upstream's default `moshi_name`
DUMMY_CARD = 2048


@dataclass(frozen=True)
class SttFiles:
    config: Path
    weights: Path
    tokenizer: Path


@dataclass
class SttModels:
    name: str  # e.g. "hf:kyutai/stt-1b-en_fr" or "dummy:tiny (RANDOM WEIGHTS)"
    lm: SttLM
    tokenizer: TextTokenizer | DummyTokenizer

    @property
    def config(self) -> SttConfig:
        return self.lm.config


def fetch_stt_files(source: str = STT_REPO_ID, *, cache_dir: Path | None = None,
                    endpoint: str | None = None) -> SttFiles:
    """The recogniser's files from a Hub repository id or `local:DIR`; config.json names the others."""
    if source.startswith(LOCAL_PREFIX):
        folder = Path(source.removeprefix(LOCAL_PREFIX))
        if not (folder / CONFIG_FILE).is_file():
            raise ModelFilesError(f"{source}: no {CONFIG_FILE}")
        weights_name, tokenizer_name = _file_names(folder / CONFIG_FILE)
        files = SttFiles(folder / CONFIG_FILE, folder / weights_name, folder / tokenizer_name)
        missing = [path.name for path in (files.weights, files.tokenizer) if not path.is_file()]
        if missing:
            raise ModelFilesError(f"{source}: missing {', '.join(missing)}")
    else:
        def fetch(name: str) -> Path:
            return hub_file(source, name, token=None, cache_dir=cache_dir, endpoint=endpoint, local_files_only=False)

        config = fetch(CONFIG_FILE)
        weights_name, tokenizer_name = _file_names(config)
        files = SttFiles(config, fetch(weights_name), fetch(tokenizer_name))
    check_safetensors(files.weights)
    return files


def _file_names(config_file: Path) -> tuple[str, str]:
    try:
        config = json.loads(config_file.read_text())
        return config.get("moshi_name", WEIGHTS_FILE), config["tokenizer_name"]
    except (ValueError, KeyError, TypeError) as error:
        raise ModelFilesError(f"{config_file}: not an STT config ({error})") from error


def load_stt_lm(path: str | Path, config: SttConfig, device: torch.device | str = "cpu",
                dtype: torch.dtype = torch.bfloat16) -> SttLM:
    """The recogniser of `config` with the weights of the safetensors file at `path` (upstream names).

    A checkpoint of a model without a depth transformer may still hold its unused input
    projection (`depformer_in.*`, made when `depformer_multi_linear` is off): it is skipped.
    """
    with torch.device("meta"):
        model = SttLM(config).to(dtype)
    expected = {name: p.shape for name, p in model.state_dict().items()}
    weights = {name: w for name, w in load_file(str(path), device=str(device)).items()
               if not name.startswith("depformer_in.")}
    check_weights(weights, expected)
    model.load_state_dict({name: w.to(device=device, dtype=dtype) for name, w in weights.items()}, assign=True)
    return model.eval().requires_grad_(False)


@torch.no_grad()
def dummy_stt_lm(config: SttConfig, device: torch.device | str = "cpu", dtype: torch.dtype = torch.bfloat16,
                 seed: int = 0) -> SttLM:
    """The recogniser of `config` with random weights (norms at one, the rest normal with std 0.02)."""
    log.warning("STT with RANDOM (dummy) weights: its words are noise, for benchmarks and tests only")
    with torch.device("meta"):
        model = SttLM(config).to(dtype)
    model.to_empty(device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    for name, param in model.named_parameters():
        if name.endswith("alpha"):
            param.fill_(1.0)
        else:
            param.normal_(0.0, 0.02, generator=generator)
    return model.eval().requires_grad_(False)


def load_stt(spec: str, device: torch.device | str | None = None) -> SttModels:
    """The recogniser named by `spec`; see the module docstring. Raises ModelSpecError on a bad spec."""
    device = torch.device(device) if device is not None else default_device()
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if spec == "dummy":
        spec = "dummy:full" if device.type == "cuda" else "dummy:tiny"
    if spec in ("dummy:tiny", "dummy:full"):
        # The tiny dummy reads the tiny dummy agent's Mimi codes (2048 entries, as every released Mimi).
        config = dataclasses.replace(SttConfig.tiny(), card=DUMMY_CARD) if spec == "dummy:tiny" else \
            SttConfig.stt_1b_en_fr()
        name = f"{spec} (RANDOM WEIGHTS)"
        return SttModels(name, dummy_stt_lm(config, device=device, dtype=dtype), DummyTokenizer(config.text_card))
    if spec == "hf" or spec.startswith(("hf:", "local:")):
        files = fetch_stt_files(STT_REPO_ID if spec == "hf" else spec.removeprefix("hf:"))
        try:
            config = SttConfig.from_json(files.config)
        except (ValueError, KeyError, TypeError) as error:
            raise ModelSpecError(f"{files.config}: not an STT config ({error})") from error
        log.info("loading the recogniser", extra={"model": spec, "device": str(device)})
        lm = load_stt_lm(files.weights, config, device=device, dtype=dtype)
        return SttModels(spec, lm, TextTokenizer(files.tokenizer))
    raise ModelSpecError(f"unknown STT model {spec!r}: use dummy, dummy:tiny, dummy:full, local:DIR or hf[:REPO]")
