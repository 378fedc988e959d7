"""Errors as log lines say them: what failed, why and where, where a bare repr says none of it.

redis-py's exceptions print as their category and class alone (`network:ConnectionError`, since
8.0), and many errors carry no message of their own, only a cause (a TimeoutError raised from
asyncio's, an OSError under a ConnectionError). Where it happened (a Redis's address) is added
as a note (PEP 678), not to the message: messages reach callers (a SIP Warning, an API's detail).
"""

from __future__ import annotations


def describe(error: BaseException) -> str:
    """`Type: message (notes)`: the message the error's own or, if it has none, its cause's
    (`Type: Cause: message`)."""
    named, link, seen, text = [type(error).__name__], error, set(), ""
    while link is not None and id(link) not in seen and not text:
        seen.add(id(link))
        text = str(link).strip()
        link = link.__cause__ or link.__context__
        if link is not None and not text:
            named.append(type(link).__name__)
    line = ": ".join([*named, text]) if text else named[0]
    notes = getattr(error, "__notes__", ())
    return f"{line} ({'; '.join(notes)})" if notes else line
