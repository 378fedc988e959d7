import shutil
import tarfile
from pathlib import Path

import pytest
import torch

from voices.catalog import VoiceCatalog, VoiceError
from voices.prompt import VoicePrompt, load_voice_prompt


@pytest.fixture
def voice_pt(reference_dir: Path) -> Path:
    return reference_dir / "voice.pt"


@pytest.fixture
def released_archive(tmp_path: Path, voice_pt: Path) -> Path:
    path = tmp_path / "hf" / "voices.tgz"
    path.parent.mkdir()
    with tarfile.open(path, "w:gz") as tar:
        tar.add(voice_pt, arcname="voices/NATF2.pt")
        tar.add(voice_pt, arcname="voices/VARM0.pt")
    return path


@pytest.fixture
def voices_dir(tmp_path: Path, voice_pt: Path) -> Path:
    """A tenant's voices folder: a ready .pt and two recordings."""
    folder = tmp_path / "voices"
    (folder / "acme").mkdir(parents=True)
    shutil.copy(voice_pt, folder / "acme" / "maya.pt")
    (folder / "acme" / "maya.wav").write_bytes(b"RIFF maya recording")
    (folder / "acme" / "omar.wav").write_bytes(b"RIFF omar recording")
    return folder


class PromptMaker:
    """Stands in for Mimi + LM replay: records each WAV it is asked for."""

    def __init__(self, voice_pt: Path):
        self.prompt = load_voice_prompt(voice_pt)
        self.calls: list[Path] = []

    def __call__(self, wav: Path) -> VoicePrompt:
        self.calls.append(wav)
        return self.prompt


@pytest.fixture
def maker(voice_pt: Path) -> PromptMaker:
    return PromptMaker(voice_pt)


@pytest.fixture
def catalog(voices_dir, tmp_path, released_archive, maker) -> VoiceCatalog:
    return VoiceCatalog(
        voices_dir, tmp_path / "cache", released_archive=released_archive, make_voice_prompt=maker
    )


def test_released_voice_comes_from_the_archive(catalog, voice_pt, tmp_path):
    path = catalog.resolve("NATF2")

    assert path == tmp_path / "cache" / "released" / "NATF2.pt"
    assert path.read_bytes() == voice_pt.read_bytes()


def test_released_voice_loads(catalog, voice_pt):
    prompt = catalog.load("VARM0")

    assert torch.equal(prompt.embeddings, load_voice_prompt(voice_pt).embeddings)
    assert torch.equal(prompt.cache, load_voice_prompt(voice_pt).cache)


def test_released_voice_absent_from_the_archive(catalog, released_archive):
    with pytest.raises(VoiceError, match=f"voice NATM3: not in {released_archive}"):
        catalog.resolve("NATM3")


def test_released_voice_without_an_archive(voices_dir, tmp_path):
    catalog = VoiceCatalog(voices_dir, tmp_path / "cache")

    with pytest.raises(VoiceError, match="voice NATF2: no voices.tgz given"):
        catalog.resolve("NATF2")


def test_pt_file_is_used_as_is(catalog, voices_dir):
    assert catalog.resolve("acme/maya.pt") == (voices_dir / "acme" / "maya.pt").resolve()
    assert catalog.load("acme/maya.pt").embeddings.shape == (11, 1, 1, 32)


def test_wav_is_made_into_a_prompt_once(catalog, maker, voices_dir, voice_pt):
    first = catalog.resolve("acme/maya.wav")
    second = catalog.resolve("acme/maya.wav")

    assert first == second
    assert maker.calls == [(voices_dir / "acme" / "maya.wav").resolve()]
    assert torch.equal(load_voice_prompt(first).cache, load_voice_prompt(voice_pt).cache)


def test_wav_cache_survives_a_new_catalog(catalog, maker, voices_dir, tmp_path):
    catalog.resolve("acme/maya.wav")

    again = VoiceCatalog(voices_dir, tmp_path / "cache", make_voice_prompt=maker)
    again.resolve("acme/maya.wav")

    assert len(maker.calls) == 1


def test_wav_cache_is_keyed_by_content(catalog, maker, voices_dir):
    shutil.copy(voices_dir / "acme" / "maya.wav", voices_dir / "maya-copy.wav")

    same = catalog.resolve("acme/maya.wav") == catalog.resolve("maya-copy.wav")
    other = catalog.resolve("acme/omar.wav")

    assert same
    assert other != catalog.resolve("acme/maya.wav")
    assert [wav.name for wav in maker.calls] == ["maya.wav", "omar.wav"]


def test_wav_without_a_prompt_maker(voices_dir, tmp_path):
    catalog = VoiceCatalog(voices_dir, tmp_path / "cache")

    with pytest.raises(VoiceError, match="voice maya.wav: WAV voices need a voice-prompt maker"):
        catalog.resolve("acme/maya.wav")


def test_bad_made_prompt_is_an_error_and_not_cached(voices_dir, tmp_path):
    wrong = VoicePrompt(embeddings=torch.zeros(3, 8), cache=torch.zeros(1, 17, 4, dtype=torch.long))
    catalog = VoiceCatalog(voices_dir, tmp_path / "cache", make_voice_prompt=lambda wav: wrong)

    with pytest.raises(VoiceError, match=r"voice prompt made from .*maya.wav: embeddings \[3, 8\] float32"):
        catalog.resolve("acme/maya.wav")
    assert not list((tmp_path / "cache").rglob("*.pt"))


@pytest.mark.parametrize(
    "voice", ["../outside.pt", "/etc/passwd.pt", "acme/../../outside.wav", "..\\outside.pt"]
)
def test_paths_leaving_the_voices_folder(catalog, voice, tmp_path):
    (tmp_path / "outside.pt").write_bytes(b"")
    (tmp_path / "outside.wav").write_bytes(b"")

    with pytest.raises(VoiceError, match="must be a relative path inside"):
        catalog.resolve(voice)


def test_link_leading_out_of_the_voices_folder(catalog, voices_dir, tmp_path, voice_pt):
    shutil.copy(voice_pt, tmp_path / "secret.pt")
    (voices_dir / "sneaky.pt").symlink_to(tmp_path / "secret.pt")

    with pytest.raises(VoiceError, match="voice sneaky.pt: leads outside"):
        catalog.resolve("sneaky.pt")


def test_missing_voice_file(catalog):
    with pytest.raises(VoiceError, match="voice acme/nobody.pt: no such file"):
        catalog.resolve("acme/nobody.pt")


def test_unsupported_file_kind(catalog, voices_dir):
    (voices_dir / "maya.mp3").write_bytes(b"ID3")

    with pytest.raises(VoiceError, match="expected a released voice name, a .pt or a .wav file"):
        catalog.resolve("maya.mp3")


def test_voice_of_the_wrong_model_size(voices_dir, tmp_path, released_archive):
    catalog = VoiceCatalog(voices_dir, tmp_path / "cache", released_archive=released_archive, dim=4096)

    with pytest.raises(VoiceError, match=r"NATF2.pt: embeddings \[11, 1, 1, 32\] float32, expected"):
        catalog.load("NATF2")


def test_damaged_voice_file(catalog, voices_dir):
    (voices_dir / "broken.pt").write_bytes(b"\x00" * 64)

    with pytest.raises(VoiceError, match="broken.pt: not a voice-prompt file"):
        catalog.load("broken.pt")
