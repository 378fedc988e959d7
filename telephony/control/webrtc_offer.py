"""What a WHIP offer must hold before a call is placed for it (the worker's aiortc peer reads the rest).

A browser's or app's offer is SDP with an audio section, the ICE credentials and DTLS fingerprint
that WebRTC requires, and its candidates (WHIP here has no trickle ICE: gathering is complete when
the offer is sent). An offer without them cannot connect, so it is refused with 400 before a slot
is reserved: no call record, no webhooks, no slot held for nothing.
"""

from __future__ import annotations

MAX_LINES = 2000


def check_offer(sdp: str) -> None:
    """Raises ValueError saying what the offer lacks."""
    lines = [line.strip() for line in sdp.replace("\r\n", "\n").split("\n") if line.strip()]
    if not lines or lines[0] != "v=0":
        raise ValueError("the offer is not SDP (it must start with v=0)")
    if len(lines) > MAX_LINES:
        raise ValueError(f"the offer has more than {MAX_LINES} lines")
    for number, line in enumerate(lines, start=1):
        if len(line) < 2 or line[1] != "=" or not line[0].isalpha() or not line.isprintable():
            raise ValueError(f"the offer's line {number} is not of the form x=value")
    audio = [line for line in lines if line.startswith("m=audio ")]
    if not audio:
        raise ValueError("the offer has no audio section")
    attributes = {line[2:].partition(":")[0] for line in lines if line.startswith("a=")}
    if not {"ice-ufrag", "ice-pwd"} <= attributes:
        raise ValueError("the offer lacks its ICE credentials (a=ice-ufrag, a=ice-pwd)")
    if "fingerprint" not in attributes:
        raise ValueError("the offer lacks its DTLS fingerprint (a=fingerprint)")
    if "candidate" not in attributes:
        raise ValueError("the offer has no ICE candidate: send it when gathering is complete (no trickle ICE)")
