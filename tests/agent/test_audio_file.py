import subprocess

import numpy as np
import pytest

from agent.audio_file import AudioFileError, read_audio, write_wav


def test_stereo_44k_becomes_mono_24k_of_the_same_duration(tmp_path):
    path = tmp_path / "tone.wav"
    subprocess.run(["sox", "-n", "-r", "44100", "-c", "2", "-b", "16", str(path), "synth", "1.5", "sine", "440"],
                   check=True)
    pcm = read_audio(path, 24_000)
    assert pcm.dtype == np.float32 and pcm.ndim == 1
    assert abs(pcm.size - 36_000) <= 48
    spectrum = np.abs(np.fft.rfft(pcm[2400:26400]))
    peak_hz = np.fft.rfftfreq(24_000, 1 / 24_000)[np.argmax(spectrum)]
    assert abs(peak_hz - 440) <= 2


def test_written_wav_reads_back(tmp_path):
    pcm = (0.5 * np.sin(np.arange(24_000) / 10)).astype(np.float32)
    write_wav(tmp_path / "out.wav", pcm, 24_000)
    back = read_audio(tmp_path / "out.wav", 24_000)
    assert back.size == pcm.size
    assert np.abs(back - pcm).max() < 1e-3


@pytest.mark.parametrize("content", [b"", b"RIFF\x00\x00\x00\x00WAVEjunk", b"not audio at all" * 100])
def test_a_bad_file_is_one_clear_error(tmp_path, content):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(AudioFileError) as error:
        read_audio(path, 24_000)
    assert str(path) in str(error.value) and "\n" not in str(error.value)
