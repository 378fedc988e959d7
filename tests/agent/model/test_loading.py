import logging

import pytest
import torch

from agent.model.loading import (
    TINY_CONTEXT,
    DummyTokenizer,
    ModelSpecError,
    load_models,
)
from agent.model.tokenizer import TextTokenizer


def test_dummy_on_cpu_is_tiny_with_a_real_context_and_says_so(caplog):
    with caplog.at_level(logging.WARNING):
        models = load_models("dummy", device="cpu")
    assert models.dummy and "RANDOM WEIGHTS" in models.name
    assert models.lm.config.dim == 32 and models.lm.config.context == TINY_CONTEXT
    assert models.lm.text_linear.weight.dtype == torch.float32
    assert any("DUMMY" in r.getMessage() for r in caplog.records)


def test_a_local_folder_in_the_release_layout_loads(release_folder):
    models = load_models(f"local:{release_folder}", device="cpu")
    assert not models.dummy and isinstance(models.tokenizer, TextTokenizer)
    assert models.voices_archive == release_folder / "voices.tgz"
    assert models.lm.config.context == 40  # the sizes of the folder's config.json


def test_a_folder_without_config_is_the_released_7b(release_folder):
    (release_folder / "config.json").unlink()
    with pytest.raises(ValueError, match="wrong shape|missing"):  # tiny weights do not fit 7B sizes
        load_models(f"local:{release_folder}", device="cpu")


@pytest.mark.parametrize("spec", ["gpt2", "dummy:huge", "local"])
def test_an_unknown_model_is_refused(spec):
    with pytest.raises(ModelSpecError, match="unknown model"):
        load_models(spec, device="cpu")


def test_the_dummy_tokenizer_gives_one_token_per_word_inside_the_vocabulary():
    tokens = DummyTokenizer(96).encode_role("Hello there, caller")
    assert len(tokens) == 5  # <system> Hello there, caller <system>
    assert all(4 <= t < 96 for t in tokens) and tokens[0] == tokens[-1]
