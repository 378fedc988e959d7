import os
import shutil
import socket
import tarfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sentencepiece
import torch
from redis_server import start_redis


def pytest_configure(config: pytest.Config) -> None:
    # The test models are tiny: threads inside one small op cost far more than they give,
    # and on a loaded 2-core machine they made steps 30 times slower.
    torch.set_num_threads(1)


DEFAULT_REFERENCE_DIR = Path(__file__).parent / "data" / "personaplex-tiny"

# Enough English for a 96-piece model (the tiny LM's text_card), with PersonaPlex's special ids:
# 0 <unk> (EPAD in the text stream), 1 <s>, 2 </s>, 3 <pad> (PAD).
TOKENIZER_CORPUS = """\
<system> You work for Acme Home Goods and your name is Maya. <system>
You enjoy having a good conversation. Have a casual discussion about eating at home.
You are a wise and friendly teacher. Answer questions in a clear and engaging way.
Hello, thanks for calling. How can I help you today?
I can check your order status, change a delivery address, or start a return.
Let me look that up for you. One moment please.
Is there anything else I can help you with? Thank you for calling, have a great day.
"""


@pytest.fixture(scope="session")
def sentencepiece_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny sentencepiece model trained here, in the layout of PersonaPlex's tokenizer."""
    folder = tmp_path_factory.mktemp("tokenizer")
    corpus = folder / "corpus.txt"
    corpus.write_text(TOKENIZER_CORPUS)
    sentencepiece.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(folder / "tiny"),
        vocab_size=96,
        character_coverage=1.0,
        normalization_rule_name="identity",
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=3,
        minloglevel=2,
    )
    return folder / "tiny.model"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The upstream reference vectors (PLEXLINE_REFERENCE_DIR, default the tiny copy in tests/data)."""
    return Path(os.environ.get("PLEXLINE_REFERENCE_DIR", DEFAULT_REFERENCE_DIR))


@pytest.fixture
def release_folder(tmp_path: Path, sentencepiece_model: Path, reference_dir: Path) -> Path:
    """A folder laid out as the released model: tiny weights under the real file names, with the
    tiny sizes in config.json (which the real release does not need)."""
    from agent.model.hub import LM_FILE, MIMI_FILE, TOKENIZER_FILE, VOICES_FILE

    folder = tmp_path / "personaplex"
    folder.mkdir()
    shutil.copy(reference_dir / "lm16.safetensors", folder / LM_FILE)
    shutil.copy(reference_dir / "mimi.safetensors", folder / MIMI_FILE)
    shutil.copy(reference_dir / "config.json", folder / "config.json")
    shutil.copy(sentencepiece_model, folder / TOKENIZER_FILE)
    with tarfile.open(folder / VOICES_FILE, "w:gz") as tar:
        tar.add(reference_dir / "voice.pt", arcname="voices/NATF2.pt")
    return folder


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def free_port() -> Callable[[], int]:
    """Gives a loopback port free at the time of asking."""
    return _free_port


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server of the tests' own on loopback: no persistence, a folder of its own."""
    port = _free_port()
    server = start_redis(tmp_path_factory.mktemp("redis"), port, "--appendonly", "no")
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def redis_prefix() -> str:
    """Keys of one test: tests share the server, never their keys."""
    return f"test-{uuid.uuid4().hex[:12]}:"
