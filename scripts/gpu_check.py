"""GPU correctness check (run on a CUDA machine): `PYTHONPATH=. python3 scripts/gpu_check.py [OUT.json]`.

1. The tiny reference session in bfloat16 against float32 on the GPU: text logits under the same
   (float32) tokens, by relative error; tokens when each runs free; float32 GPU against the golden
   tokens.
2. The full-size dummy model in bfloat16: loads within GPU memory and runs 100 conversation steps
   of one call through the engine.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from agent.contracts.audio import FRAME_SIZE
from agent.engine.backend import CallSetup
from agent.engine.engine import ModelBackend
from agent.engine.prefix import PersonaPrompt
from agent.model.checkpoint import load_lm
from agent.model.lm import LMConfig
from agent.model.loading import load_models
from agent.model.persona_prompt import prefill_persona
from agent.model.stream import StreamingLM

REFERENCE = Path(__file__).parents[1] / "tests" / "data" / "personaplex-tiny"


def reference_session(dtype: torch.dtype, forced: torch.Tensor | None = None):
    """Tokens [17, T] and text logits [T, V] of the reference session on the GPU, optionally with the
    agent's text and audio forced to `forced` (the same context for both precisions)."""
    golden = load_file(REFERENCE / "lm_golden.safetensors", device="cuda")
    scenario = json.loads((REFERENCE / "scenario.json").read_text())
    lm = load_lm(REFERENCE / "lm16.safetensors", LMConfig.from_json(REFERENCE / "config.json"), "cuda", dtype)
    stream = StreamingLM(lm)
    state = stream.init_state(1)
    prefill_persona(stream, state, golden["voice_codes"][0], scenario["text_prompt_tokens"], scenario["silence_frames"])
    tokens, logits = [], []
    user = golden["user_codes"]
    for i in range(user.shape[2]):
        kwargs = {}
        if forced is not None and i + 1 < user.shape[2]:
            # Output i is the frame one step back; force this step's frame, which comes out next step.
            kwargs = dict(text=forced[None, 0, i + 1].cuda(), agent=forced[None, 1:9, i + 1].cuda())
        out = stream.step(state, user[:, :, i], return_text_logits=True, **kwargs)
        tokens.append(out.tokens[0])
        logits.append(out.text_logits[0])
    return torch.stack(tokens, dim=1).cpu(), torch.stack(logits).float().cpu(), golden["lm16_tokens"][0].cpu()


def check_precision() -> dict:
    f32_tokens, f32_logits, golden = reference_session(torch.float32)
    bf16_tokens, _, _ = reference_session(torch.bfloat16)
    _, f32_forced_logits, _ = reference_session(torch.float32, forced=f32_tokens)
    _, bf16_forced_logits, _ = reference_session(torch.bfloat16, forced=f32_tokens)
    rel = ((bf16_forced_logits - f32_forced_logits).norm() / f32_forced_logits.norm()).item()
    return {
        "float32_gpu_tokens_equal_golden": bool(torch.equal(f32_tokens, golden)),
        "bf16_text_logits_relative_error": rel,
        "bf16_free_running_token_agreement": (bf16_tokens == f32_tokens).float().mean().item(),
    }


def check_full_size() -> dict:
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    models = load_models("dummy:full", "cuda")
    torch.cuda.synchronize()
    load_seconds = time.perf_counter() - start
    backend = ModelBackend(models.mimi, models.lm, num_slots=1)
    backend.warm_up()
    prompt = PersonaPrompt(voice=torch.randint(0, 2048, (8, 100)), text_tokens=tuple(range(10, 90)))
    backend.join(0, CallSetup(prompt=prompt, seed=3))
    active = torch.ones(1, dtype=torch.bool)
    outputs = [backend.step(torch.randn(1, FRAME_SIZE) * 0.1, active) for _ in range(100)]
    return {
        "load_seconds": load_seconds,
        "steps": len(outputs),
        "all_ready": all(bool(o.ready[0]) for o in outputs),
        "audio_finite": all(bool(torch.isfinite(o.pcm).all()) for o in outputs),
        "peak_memory_gb": torch.cuda.max_memory_allocated() / 1e9,
        "lm_parameters": sum(p.numel() for p in models.lm.parameters()),
    }


def main() -> None:
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "precision": check_precision(), "full_size": check_full_size()}
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(json.dumps(result, indent=2) + "\n")
    p, f = result["precision"], result["full_size"]
    print(f"{result['device']} torch {result['torch']}")
    print(f"tiny reference: float32 GPU tokens equal golden: {p['float32_gpu_tokens_equal_golden']}; "
          f"bf16 text logits rel. error {p['bf16_text_logits_relative_error']:.2e}; "
          f"bf16 free-running token agreement {p['bf16_free_running_token_agreement']:.3f}")
    print(f"full-size dummy: {f['lm_parameters'] / 1e9:.2f} B LM parameters, loaded in {f['load_seconds']:.1f} s, "
          f"{f['steps']} steps, ready {f['all_ready']}, finite {f['audio_finite']}, peak {f['peak_memory_gb']:.1f} GB")


if __name__ == "__main__":
    main()
