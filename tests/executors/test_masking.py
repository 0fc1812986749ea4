"""Secret values masked in a run's log: whole, split across chunks, URL-quoted, base64."""

import base64
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from executors.logs import CappedLog
from executors.masking import MIN_LENGTH, Masker

SECRET = "p@ss word/42+x"  # characters that URL quoting changes


def stream(masker: Masker, chunks: list[bytes]) -> bytes:
    return b"".join(masker.feed(chunk) for chunk in chunks) + masker.flush()


@pytest.mark.parametrize(
    "form",
    [
        SECRET,
        quote(SECRET, safe=""),
        quote(SECRET),
        quote_plus(SECRET),
        base64.b64encode(SECRET.encode()).decode(),
        base64.urlsafe_b64encode(SECRET.encode()).decode(),
        base64.b64encode(SECRET.encode()).decode().rstrip("="),
    ],
)
def test_every_common_form_is_masked(form: str) -> None:
    out = stream(Masker([SECRET]), [f"before {form} after\n".encode()])
    assert out == b"before *** after\n"


@given(st.data())
def test_a_secret_split_anywhere_across_chunks_is_masked(data: st.DataObject) -> None:
    text = f"a{SECRET}b{SECRET}{SECRET}\nc {quote(SECRET, safe='')}\n".encode()
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=8)))
    chunks = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    assert stream(Masker([SECRET]), chunks) == b"a***b******\nc ***\n"


def test_ordinary_output_is_not_held_back() -> None:
    masker = Masker([SECRET])
    assert masker.feed(b"epoch 3 of 7\n") == b"epoch 3 of 7\n"
    assert masker.feed(b"token: p@ss") == b"token: "  # may be the start of the secret: held
    assert masker.feed(b" wordy\n") == b"p@ss wordy\n"  # it was not


def test_short_values_are_not_masked() -> None:
    masker = Masker(["x" * (MIN_LENGTH - 1), "longer-one"])
    assert masker.text("xxxx longer-one") == "xxxx ***"
    assert not Masker(["abc"])


def test_the_log_masks_output_notes_and_the_last_line(tmp_path: Path) -> None:
    log = CappedLog(tmp_path / "out.log", masker=Masker([SECRET]))
    log.output(b"half p@ss ")
    log.note(f"a note quoting {SECRET}")
    log.output(b"word/42+x done\n")
    log.output(f"RuntimeError: bad {SECRET}\n".encode())
    log.close()
    text = (tmp_path / "out.log").read_text()
    assert SECRET not in text and "word/42" not in text
    assert "[peach] a note quoting ***" in text and "*** done" in text  # held across the note
    assert log.last_line() == "RuntimeError: bad ***"
