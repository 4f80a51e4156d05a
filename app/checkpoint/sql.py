"""The checkpoint saver's statements: each write of a run is one statement.

The tables, rows and conflict rules are those of `langgraph-checkpoint-postgres`, so that its
reads see what these statements store.
"""

import functools

_BLOB_COLUMNS = "thread_id, checkpoint_ns, channel, version, type, blob"
_WRITE_COLUMNS = (
    "thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, type, blob"
)
_ON_WRITE_CONFLICT = {
    # Special writes (errors, interrupts, resumes) replace an earlier one at their index;
    # a task's ordinary writes are written once, as the library does.
    True: "UPDATE SET channel = EXCLUDED.channel, type = EXCLUDED.type, blob = EXCLUDED.blob",
    False: "NOTHING",
}


@functools.cache
def put_checkpoint_sql(blobs: int) -> bytes:
    """A checkpoint and `blobs` new channel values in one statement (the library sends two).

    Rows of values rather than arrays: psycopg adapts scalars in C, arrays in Python.
    """
    checkpoint = f"""
        INSERT INTO checkpoints
            (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, checkpoint, metadata)
        VALUES {_rows(1, 6, start=6 * blobs)}
        ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id)
        DO UPDATE SET checkpoint = EXCLUDED.checkpoint, metadata = EXCLUDED.metadata
    """
    if not blobs:
        return checkpoint.encode()
    return (
        f"WITH blobs AS (INSERT INTO checkpoint_blobs ({_BLOB_COLUMNS}) VALUES {_rows(blobs, 6)}"
        " ON CONFLICT (thread_id, checkpoint_ns, channel, version) DO NOTHING)" + checkpoint
    ).encode()


@functools.cache
def put_writes_sql(writes: int, upsert: bool) -> bytes:
    """A task's `writes` writes in one statement."""
    return (
        f"INSERT INTO checkpoint_writes ({_WRITE_COLUMNS}) VALUES {_rows(writes, 9)}"
        " ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO "
        + _ON_WRITE_CONFLICT[upsert]
    ).encode()


def _rows(count: int, width: int, *, start: int = 0) -> str:
    """`count` rows of `width` placeholders, numbered on from `$start + 1`."""
    return ", ".join(
        "(" + ", ".join(f"${start + row * width + col + 1}" for col in range(width)) + ")"
        for row in range(count)
    )
