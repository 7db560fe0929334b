# Types of the native JSON scan (_scan.c) for mypy, which cannot read a C extension.
from typing import Literal

from _typeshed import ReadableBuffer

def contains(value: ReadableBuffer, needle: ReadableBuffer) -> bool: ...
def json_field(value: ReadableBuffer, path: tuple[bytes, ...]) -> bytes | None | Literal[True]: ...
