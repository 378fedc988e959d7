import yaml

from personas.round_trip import updated_yaml

OLD = """\
# the line's own notes
answers:
  - "+15555550100"   # the main number
persona:
  role: Short.  # keep it short
  voice: NATF2
recording: false
"""


def test_unchanged_keys_keep_their_comments_and_changed_ones_their_place():
    document = yaml.safe_load(OLD) | {"recording": True}

    text = updated_yaml(OLD, document)

    assert text == OLD.replace("recording: false", "recording: true")


def test_keys_left_out_are_removed_and_new_ones_added():
    document = {"answers": ["+15555550100"], "persona": {"role": "Short.", "voice": "NATM1"}, "greeting": "caller_first"}

    text = updated_yaml(OLD, document)

    assert yaml.safe_load(text) == document
    assert "# the main number" in text and "recording" not in text


def test_long_text_is_folded_and_reads_back_as_one_line():
    role = " ".join(["word"] * 60)

    text = updated_yaml(None, {"persona": {"role": role, "voice": "NATF2"}})

    assert yaml.safe_load(text)["persona"]["role"] == role
    assert max(len(line) for line in text.splitlines()) <= 100


def test_text_that_yaml_1_1_would_read_as_a_boolean_stays_text():
    document = {"persona": {"role": "yes", "voice": "NATF2"}, "answers": ["on"]}

    assert yaml.safe_load(updated_yaml(OLD, document)) == document
