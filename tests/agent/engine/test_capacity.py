import json

import torch

from agent.engine.capacity import kv_bytes_per_slot, rated_calls, reserved_bytes, slots_that_fit
from agent.model.lm import LMConfig

SEVEN_B = LMConfig.personaplex_7b()
BF16 = torch.bfloat16


def test_a_slot_holds_a_full_context_of_keys_and_values_in_every_layer():
    assert kv_bytes_per_slot(SEVEN_B, BF16) == 32 * 2 * 3000 * 4096 * 2
    assert kv_bytes_per_slot(SEVEN_B, BF16, "fp8") == 32 * 2 * 3000 * 32 * (128 + 4)


def test_slots_leave_room_for_the_persona_cache_and_one_prefill():
    kv = kv_bytes_per_slot(SEVEN_B, BF16)
    reserved = reserved_bytes(SEVEN_B, BF16)
    assert reserved > kv  # the prefill scratch of one prompt, up to a whole context, is kept free
    assert slots_that_fit(SEVEN_B, BF16, reserved + 3 * kv + kv // 2) == 3
    assert slots_that_fit(SEVEN_B, BF16, reserved - 1) == 0
    fp8 = kv_bytes_per_slot(SEVEN_B, BF16, "fp8")
    assert slots_that_fit(SEVEN_B, BF16, reserved_bytes(SEVEN_B, BF16, "fp8") + 5 * fp8, kv_dtype="fp8") == 5


def test_the_rated_calls_are_read_for_the_setup_they_were_measured_on(tmp_path):
    result = tmp_path / "churn.json"
    result.write_text(json.dumps({"device": "NVIDIA H200", "weights": "bf16", "kv_dtype": "bf16", "recogniser": None,
                                  "rated_calls": 78, "sizes": []}))
    assert rated_calls(result, "NVIDIA H200", "bf16", "bf16") == 78
    assert rated_calls(result, "NVIDIA H100 80GB HBM3", "bf16", "bf16") is None
    assert rated_calls(result, "NVIDIA H200", "bf16", "fp8") is None
    assert rated_calls(result, "NVIDIA H200", "bf16", "bf16", recogniser="hf:kyutai/stt-1b-en_fr") is None
