"""Collection names: the one rule a collection's name follows, for every package to reuse.

A name becomes part of its collection's table and index names (`rag_chunks_<name>`,
`rag_<name>_hnsw`); the 40-character limit keeps those within Postgres' 63-byte identifiers.
"""

import re

from app.errors import RetrievalError

COLLECTION_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,39}$"
"""A collection name: 1-40 lowercase letters, digits or underscores, starting with a letter."""
DEFAULT_COLLECTION = "default"

_NAME = re.compile(COLLECTION_NAME_PATTERN)


def validate_collection(name: str) -> str:
    """Return a collection name that is safe as part of a table name.

    Raises:
        RetrievalError: the name is not 1-40 lowercase letters, digits or underscores.
    """
    if not _NAME.fullmatch(name):
        raise RetrievalError(
            f"bad collection name {name!r}: use 1-40 lowercase letters, digits and underscores, "
            "starting with a letter"
        )
    return name
