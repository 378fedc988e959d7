"""baresip as a second real user agent: it calls a line, speaks a WAV for 10 s and hangs up; what it heard is checked."""

from __future__ import annotations

import wave

import numpy as np
import pytest
from sip_service import check_echo, run_baresip, speech, write_wav

from bench.echo_latency import high_band_share

pytestmark = pytest.mark.anyio


def read_wav(path) -> tuple[np.ndarray, int]:
    with wave.open(str(path)) as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1
        return np.frombuffer(w.readframes(w.getnframes()), "<i2"), w.getframerate()


async def test_baresip_calls_a_line_for_10_s_and_hears_its_speech_back(service, tmp_path):
    wav = write_wav(tmp_path / "caller.wav", speech(10.0))
    returncode, output = await run_baresip(tmp_path / "baresip", "+15555550100", service.sip_port, wav, seconds=14)
    assert returncode == 0, output[-2000:]
    assert "terminated (duration: 10 secs)" in output, output[-2000:]  # it hung up at the end of its WAV
    assert await service.wait_idle()  # and its BYE freed the slot
    sent = read_wav(next((tmp_path / "baresip" / "dumps").glob("*-enc.wav")))
    heard = read_wav(next((tmp_path / "baresip" / "dumps").glob("*-dec.wav")))
    assert sent[1] == heard[1] == 8000
    assert heard[0].size > 9 * 8000
    check_echo(sent[0], heard[0])  # the echo engine returned its speech, in time, all through the call
    assert np.sqrt(np.mean(heard[0][8000:].astype(np.float64) ** 2)) > 300


async def test_baresip_offering_g722_first_gets_g722_and_hears_the_band_above_4_khz(service, tmp_path):
    sent = speech(8.0, rate=16000)  # espeak-ng speaks at 22 kHz: its fricatives reach well above 4 kHz
    wav = write_wav(tmp_path / "caller.wav", sent, rate=16000)
    returncode, output = await run_baresip(tmp_path / "baresip", "+15555550100", service.sip_port, wav, seconds=12,
                                           codecs="G722/16000/1,PCMU,PCMA")
    assert returncode == 0, output[-2000:]
    assert "Set audio decoder: G722 16000Hz" in output, output[-2000:]  # our answer took G.722
    assert "terminated (duration: 8 secs)" in output, output[-2000:]
    assert await service.wait_idle()
    heard, rate = read_wav(next((tmp_path / "baresip" / "dumps").glob("*-dec.wav")))
    assert rate == 16000 and heard.size > 7 * 16000  # baresip decoded G.722 at 16 kHz
    check_echo(sent, heard, rate=16000)
    assert high_band_share(heard, 16000) > 0.5 * high_band_share(sent, 16000) > 0.001  # G.711 carries none
