"""Text from clients that no tokenizer, encoder or JSON writer can take: refused once, at the edge.

A JSON string may carry a lone UTF-16 surrogate ("\\ud800"). Python decodes it into a str that cannot be
encoded as UTF-8, so it would fail deep inside a tokenizer or when echoed back. Front ends call
`check_client_text` on every parsed client message, so the error names the field instead.
"""

from __future__ import annotations

from engine.errors import InvalidParameter


def _bad(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def first_unpaired_surrogate(value: object, path: str = "") -> str | None:
    """The path ("messages[0].content") of the first string, key included, that is not valid Unicode."""
    if isinstance(value, str):
        return path if _bad(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            child = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and _bad(key):
                return path or "(key)"
            found = first_unpaired_surrogate(item, child)
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = first_unpaired_surrogate(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def check_client_text(value: object, path: str = "") -> None:
    """Raise InvalidParameter naming the first string that holds an unpaired surrogate."""
    found = first_unpaired_surrogate(value, path)
    if found is not None:
        raise InvalidParameter(
            found or None,
            f"{found or 'The request'} contains an unpaired UTF-16 surrogate (invalid Unicode text)",
            code="invalid_text",
        )
