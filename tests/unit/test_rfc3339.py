"""components/rfc3339.py, and examples/hpa-consumer's copy of it: the outputs' times, parsed leniently."""

from __future__ import annotations

import datetime as dt
import inspect

import pytest

from components import rfc3339
from tests.unit.test_hpa_consumer import consumer

PARSERS = {"components": rfc3339.parse_time, "hpa-consumer": consumer.parse_time}
UTC = dt.UTC

GOOD = {
    "2027-12-02T13:24:07Z": dt.datetime(2027, 12, 2, 13, 24, 7, tzinfo=UTC),
    "2027-12-02T13:24:07z": dt.datetime(2027, 12, 2, 13, 24, 7, tzinfo=UTC),
    "2027-12-02t13:24:07+00:00": dt.datetime(2027, 12, 2, 13, 24, 7, tzinfo=UTC),
    # nanoseconds (what Go writes): cut to microseconds, never rounded into the next second
    "2027-12-02T13:24:07.123456789+01:00": dt.datetime(2027, 12, 2, 12, 24, 7, 123456, tzinfo=UTC),
    "2027-12-02T13:24:59.999999999Z": dt.datetime(2027, 12, 2, 13, 24, 59, 999999, tzinfo=UTC),
    "2027-12-02T13:24:07.5Z": dt.datetime(2027, 12, 2, 13, 24, 7, 500000, tzinfo=UTC),
    "2027-12-02T08:54:07.000-04:30": dt.datetime(2027, 12, 2, 13, 24, 7, tzinfo=UTC),
    # pulumi-tls's validity_end_time as the released provider writes it (Go's RFC3339Nano in its local zone,
    # trailing zeros of the fraction dropped)
    "2027-11-26T17:05:17.750041123-04:00": dt.datetime(2027, 11, 26, 21, 5, 17, 750041, tzinfo=UTC),
    "2027-11-26T17:05:17.75004112-04:00": dt.datetime(2027, 11, 26, 21, 5, 17, 750041, tzinfo=UTC),
    "2027-11-27T02:35:17.7+05:30": dt.datetime(2027, 11, 26, 21, 5, 17, 700000, tzinfo=UTC),
}
BAD = [
    "2027-12-02T13:24:07",  # no offset: not RFC 3339, would be read as local time
    "2027-12-02 13:24:07Z",
    "2027-12-02T13:24:07.Z",
    "2027-12-02T13:24Z",
    "2027-12-02T13:24:07+0100",
    "2027-13-02T13:24:07Z",
    "2027-12-02T24:00:00Z",
    "2027-12-02T13:24:07+24:00",
    "2027-12-02T13:24:07Z ",
    "２０２７-12-02T13:24:07Z",  # fullwidth digits
    "",
    "soon",
    None,
    1796217847,
]


@pytest.mark.parametrize("parser", PARSERS)
@pytest.mark.parametrize("text", GOOD)
def test_lenient_fraction_and_offset(parser, text):
    parsed = PARSERS[parser](text)
    assert parsed == GOOD[text] and parsed.utcoffset() is not None


def test_the_offset_is_kept():
    assert rfc3339.parse_time("2027-12-02T13:24:07.123456789+01:00").utcoffset() == dt.timedelta(hours=1)


@pytest.mark.parametrize("parser", PARSERS)
@pytest.mark.parametrize("text", BAD)
def test_bad_input_is_a_value_error_naming_it(parser, text):
    with pytest.raises(ValueError, match="is not an RFC 3339 time") as e:
        PARSERS[parser](text)
    assert repr(text) in str(e.value)


def test_why_not_fromisoformat():
    """What the module's docstring says of Python's own parser, checked on this Python rather than assumed:
    it reads the provider's nanoseconds and offset as parse_time does, but takes a time without an offset
    (naive: compared as local time, or not at all) and refuses RFC 3339's lowercase separators."""
    upstream = "2027-11-26T17:05:17.750041123-04:00"
    assert dt.datetime.fromisoformat(upstream) == rfc3339.parse_time(upstream)
    assert dt.datetime.fromisoformat("2027-12-02T13:24:07").tzinfo is None
    with pytest.raises(ValueError):
        dt.datetime.fromisoformat("2027-12-02t13:24:07z")


def test_the_consumer_s_copy_is_the_same_code():
    """examples/hpa-consumer runs on its own, so it carries the parser: the same pattern and function."""
    assert consumer._RFC3339.pattern == rfc3339._RFC3339.pattern
    assert consumer._RFC3339.flags == rfc3339._RFC3339.flags
    assert inspect.getsource(consumer.parse_time) == inspect.getsource(rfc3339.parse_time)
