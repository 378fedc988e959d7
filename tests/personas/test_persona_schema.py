import pytest
from pydantic import ValidationError

from personas.schema import Persona
from voices.released import RELEASED_VOICES

ROLE = "You work for Acme Home Goods and your name is Maya Chen."


def persona(**fields) -> Persona:
    return Persona.model_validate({"role": ROLE, "voice": "NATF2", **fields})


def rejected_at(**fields) -> tuple[tuple[str | int, ...], str]:
    with pytest.raises(ValidationError) as error:
        persona(**fields)
    [detail] = error.value.errors()
    return detail["loc"], detail["msg"]


def test_the_eighteen_released_voices():
    assert len(RELEASED_VOICES) == 18
    assert {"NATF0", "NATF3", "NATM3", "VARF4", "VARM0", "VARM4"} <= RELEASED_VOICES
    for name in RELEASED_VOICES:
        assert persona(voice=name).voice == name


def test_sampling_defaults():
    sampling = persona().sampling

    assert (sampling.audio.temperature, sampling.audio.top_k) == (0.8, 250)
    assert (sampling.text.temperature, sampling.text.top_k) == (0.7, 25)
    assert sampling.seed is None


def test_partial_sampling_keeps_the_other_defaults():
    sampling = persona(sampling={"text": {"temperature": 0}, "seed": 7}).sampling

    assert (sampling.text.temperature, sampling.text.top_k) == (0.0, 25)
    assert (sampling.audio.temperature, sampling.audio.top_k) == (0.8, 250)
    assert sampling.seed == 7


def test_role_is_stripped():
    assert persona(role=f"\n  {ROLE}  \n").role == ROLE


@pytest.mark.parametrize("voice", ["maya.wav", "acme/maya.pt", "./acme/maya.wav", "NATF2.pt"])
def test_voice_file_inside_the_voices_folder(voice):
    assert persona(voice=voice).voice == voice


@pytest.mark.parametrize(
    ("voice", "reason"),
    [
        ("NATF9", "must be a released voice (NATF0, NATF1"),
        ("natf2", "must be a released voice"),
        ("maya.mp3", "must be a released voice"),
        ("", "must be a released voice"),
        ("/etc/voices/maya.wav", "a voice file must be a relative path inside the voices folder"),
        ("../maya.pt", "a voice file must be a relative path inside the voices folder"),
        ("acme/../../maya.wav", "a voice file must be a relative path inside the voices folder"),
        ("..\\maya.wav", "a voice file must be a relative path inside the voices folder"),
    ],
)
def test_invalid_voices(voice, reason):
    loc, message = rejected_at(voice=voice)

    assert loc == ("voice",)
    assert reason in message


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"role": ""}, ("role",)),
        ({"role": "   "}, ("role",)),
        ({"name": "Maya"}, ("name",)),
        ({"sampling": {"audio": {"top_p": 0.9}}}, ("sampling", "audio", "top_p")),
        ({"sampling": {"audio": {"top_k": 0}}}, ("sampling", "audio", "top_k")),
        ({"sampling": {"audio": {"top_k": 2049}}}, ("sampling", "audio", "top_k")),
        ({"sampling": {"audio": {"temperature": -0.1}}}, ("sampling", "audio", "temperature")),
        ({"sampling": {"audio": {"temperature": 2.01}}}, ("sampling", "audio", "temperature")),
        ({"sampling": {"text": {"top_k": 0}}}, ("sampling", "text", "top_k")),
        ({"sampling": {"text": {"top_k": 32001}}}, ("sampling", "text", "top_k")),
        ({"sampling": {"text": {"temperature": 3}}}, ("sampling", "text", "temperature")),
        ({"sampling": {"seed": -1}}, ("sampling", "seed")),
        ({"sampling": {"seed": 2**63}}, ("sampling", "seed")),
    ],
)
def test_rejected_fields(fields, loc):
    assert rejected_at(**fields)[0] == loc


def test_persona_is_immutable():
    with pytest.raises(ValidationError):
        persona().voice = "NATM0"  # type: ignore[misc]


def test_a_role_too_long_for_the_context_is_refused():
    with pytest.raises(ValidationError, match="at most 6000 characters"):
        Persona(role="word " * 1300, voice="NATF2")
