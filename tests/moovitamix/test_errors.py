import psycopg
import pytest

from moovitamix.errors import one_line


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (RuntimeError("disk full"), "disk full"),
        (
            RuntimeError("\n  reading failed  \n\n  DETAIL: no table\n"),
            "reading failed DETAIL: no table",
        ),
        (RuntimeError("a\nb\nc\nd\ne"), "a b c"),
        (RuntimeError(""), "RuntimeError"),
        (KeyError(), "KeyError"),
    ],
)
def test_one_line(exc: BaseException, text: str) -> None:
    assert one_line(exc) == text


def test_a_driver_error_keeps_its_reason_on_one_line() -> None:
    with pytest.raises(psycopg.OperationalError) as caught:
        psycopg.connect("postgresql://nobody@127.0.0.1:1/nowhere", connect_timeout=2)
    text = one_line(caught.value)
    assert "\n" not in text
    assert "127.0.0.1" in text
