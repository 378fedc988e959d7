from pathlib import Path

import pytest

from personas.loader import PersonaError, load_persona

EXAMPLES = Path(__file__).parents[2] / "personas" / "examples"

VALID = """\
role: You work for Acme Home Goods and your name is Maya Chen.
voice: NATF2
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "acme.yaml"
    path.write_text(text)
    return path


def rejection(tmp_path: Path, text: str) -> str:
    """The error message for a file holding `text`, less the file name it must start with."""
    path = write(tmp_path, text)
    with pytest.raises(PersonaError) as error:
        load_persona(path)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message.removeprefix(f"{path}: ")


def test_acme_support_example():
    persona = load_persona(EXAMPLES / "acme-support.yaml")

    assert persona.voice == "NATF2"
    assert persona.role.startswith("You work for Acme Home Goods")
    assert "\n" not in persona.role


def test_every_shipped_example_loads():
    examples = sorted(EXAMPLES.glob("*.yaml"))

    assert examples
    for path in examples:
        load_persona(path)


def test_valid_file(tmp_path):
    text = VALID + "sampling:\n  audio: {temperature: 0.6, top_k: 100}\n  seed: 42\n"

    persona = load_persona(write(tmp_path, text))

    assert persona.voice == "NATF2"
    assert (persona.sampling.audio.temperature, persona.sampling.audio.top_k, persona.sampling.seed) == (
        0.6,
        100,
        42,
    )


def test_message_names_file_field_and_reason(tmp_path):
    assert rejection(tmp_path, VALID + "sampling:\n  audio:\n    top_k: 0\n") == (
        "sampling.audio.top_k: must be >= 1"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("voice: NATF2\n", "role: required"),
        ("role: ''\nvoice: NATF2\n", "role: must not be empty"),
        ("role: '   '\nvoice: NATF2\n", "role: must not be blank"),
        ("role: [a, b]\nvoice: NATF2\n", "role: Input should be a valid string"),
        (VALID + "name: Maya\n", "name: unknown field"),
        (VALID + "sampling:\n  audio:\n    top_p: 0.9\n", "sampling.audio.top_p: unknown field"),
        (VALID + "sampling:\n  audio:\n    top_k: 2049\n", "sampling.audio.top_k: must be <= 2048"),
        (VALID + "sampling:\n  text:\n    temperature: 2.5\n", "sampling.text.temperature: must be <= 2.0"),
        (
            VALID + "sampling:\n  audio:\n    top_k: many\n",
            "sampling.audio.top_k: Input should be a valid integer",
        ),
        (VALID + "sampling:\n  seed: 9223372036854775808\n", "sampling.seed: must be < 9223372036854775808"),
        (VALID + "sampling: fast\n", "sampling: Input should be a valid dictionary"),
        ("role: x\nvoice: ../maya.wav\n", "voice: a voice file must be a relative path inside"),
    ],
)
def test_invalid_fields(tmp_path, text, expected):
    assert rejection(tmp_path, text).startswith(expected)


def test_several_errors_in_one_line(tmp_path):
    message = rejection(tmp_path, "voice: NATF2\nsampling:\n  audio:\n    top_k: 0\n")

    assert message == "role: required; sampling.audio.top_k: must be >= 1"


def test_bad_yaml_syntax_names_the_line(tmp_path):
    message = rejection(tmp_path, "role: You work for Acme.\nvoice: [NATF2\n")

    assert message.startswith("line 3, column 1: invalid YAML")


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("- role: x\n", "a list"),
        ("just a sentence\n", "plain text"),
        ("", "an empty file"),
        ("42\n", "a number"),
    ],
)
def test_document_that_is_not_a_mapping(tmp_path, text, kind):
    assert rejection(tmp_path, text) == f"expected a mapping of persona fields, got {kind}"


def test_missing_file(tmp_path):
    with pytest.raises(PersonaError, match=r"nope.yaml: cannot read"):
        load_persona(tmp_path / "nope.yaml")


def test_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("role: caf\xe9\nvoice: NATF2\n".encode("latin-1"))

    with pytest.raises(PersonaError, match=r"latin1.yaml: cannot read"):
        load_persona(path)


def test_a_key_named_twice_is_refused_with_both_lines(tmp_path):
    message = rejection(tmp_path, VALID + "sampling: {seed: 1}\nvoice: NATM1\n")

    assert message == "line 4, column 1: invalid YAML: duplicate key 'voice' (first on line 2)"


def test_a_nested_key_named_twice_is_refused(tmp_path):
    message = rejection(tmp_path, VALID + "sampling:\n  seed: 1\n  seed: 2\n")

    assert message == "line 5, column 3: invalid YAML: duplicate key 'seed' (first on line 4)"


def test_keys_a_merge_brings_in_may_be_overridden(tmp_path):
    path = write(tmp_path, "<<: {role: Be brief., voice: NATF1}\nvoice: NATM2\n")

    assert load_persona(path).voice == "NATM2"
