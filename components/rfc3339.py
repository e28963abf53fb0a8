"""RFC 3339 times as this program's outputs give them, parsed leniently: every reader in the repository
uses `parse_time` (examples/hpa-consumer, copied and run on its own, has the same function; a unit test holds
the two in step).

Leniency is the contract (docs/contracts.md "Outputs"): a time may carry fractional seconds of any length
and any offset (`Z`, `z`, `+01:00`). pulumi-tls writes validity_end_time with Go's time.MarshalText, in the
provider's local zone with up to nine fractional digits (RFC3339Nano: trailing zeros dropped), e.g.
`2027-11-26T17:05:17.750041123-04:00`; the program publishes it as it comes. Digits past microseconds are
dropped here (a truncation: a certificate's notAfter is whole seconds, the provider's time cut to them).

Not `datetime.fromisoformat`: Python 3.11's (checked with 3.11.7) does read nine digits and offsets, but it
also takes a time without an offset (a naive datetime, compared as local time or not at all), a space for
the `T` and ISO 8601's basic format, and refuses RFC 3339's lowercase `t` and `z`. Standard library only,
like contract.py.
"""

from __future__ import annotations

import datetime as dt
import re

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    re.ASCII,  # \d is 0-9 only
)


def parse_time(text: str) -> dt.datetime:
    """An RFC 3339 date-time as an aware datetime (its own offset kept); ValueError naming the text."""
    m = _RFC3339.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"{text!r} is not an RFC 3339 time (e.g. 2027-12-02T13:24:07Z or "
                         "2027-12-02T13:24:07.123456789+01:00)")
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    micro = int((m.group(7) or "").ljust(6, "0")[:6])
    offset = dt.timedelta(0)
    if m.group(9):
        sign = 1 if m.group(9) == "+" else -1
        offset = sign * dt.timedelta(hours=int(m.group(10)), minutes=int(m.group(11)))
    try:
        return dt.datetime(year, month, day, hour, minute, second, micro, tzinfo=dt.timezone(offset))
    except ValueError as e:  # month 13, hour 24, second 60, offset 24:00 ...
        raise ValueError(f"{text!r} is not an RFC 3339 time: {e}") from None
