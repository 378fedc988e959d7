"""Trunks that encrypt their media: real peers offer SRTP keyed by SDES (RFC 4568) and hear their echo."""

from __future__ import annotations

import pytest
from sip_service import check_echo, run_baresip, run_sipp, speech, write_wav
from test_baresip import read_wav

pytestmark = pytest.mark.anyio

ACME, UMBRELLA = "+15555550100", "+15555550400"  # umbrella's trunk requires SRTP


@pytest.mark.parametrize("dialled", [ACME, UMBRELLA])
async def test_baresip_offering_srtp_gets_srtp_and_hears_its_speech_back(service, tmp_path, dialled):
    wav = write_wav(tmp_path / "caller.wav", speech(6.0))
    returncode, output = await run_baresip(tmp_path / "baresip", dialled, service.sip_port, wav, seconds=10,
                                           mediaenc="srtp-mand")
    assert returncode == 0, output[-2000:]
    assert "terminated (duration: 6 secs)" in output, output[-3000:]
    assert "SRTP is Enabled (cryptosuite=AES_CM_128_HMAC_SHA1_80)" in output, output[-3000:]
    await service.wait_idle()
    sent = read_wav(next((tmp_path / "baresip" / "dumps").glob("*-enc.wav")))[0]
    heard = read_wav(next((tmp_path / "baresip" / "dumps").glob("*-dec.wav")))[0]
    assert heard.size > 5 * 8000
    check_echo(sent, heard)  # decrypted by baresip with the key of our answer, and authenticated


async def test_a_plain_rtp_offer_to_a_trunk_that_requires_srtp_is_refused_with_488(service, tmp_path):
    run = await run_sipp(service.sip_port, "refused.xml", tmp_path, UMBRELLA, substitutions={"STATUS": 488})
    run.check()
    assert not await service.registry.calls()
