"""Opening the SQLite file: URL parsing, pragmas, transactions, in-process wake-ups."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

from conveyor.backends.sqlite.migrations import SchemaTooNewError, migrate
from conveyor.errors import BackendError, BackendUnavailableError, ConfigurationError

T = TypeVar("T")

_SYNC_MODES = ("FULL", "EXTRA", "NORMAL")

# Primary result codes meaning "not now" rather than "never": another connection holds
# the lock past the timeout, or the disk or file is full, read-only, missing or failing.
# Every other error (SQLITE_ERROR is a bad statement, SQLITE_CORRUPT a damaged file) is
# not something a retry can fix.
_UNAVAILABLE_CODES = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
        sqlite3.SQLITE_PERM,
        sqlite3.SQLITE_NOLFS,
    }
)


@dataclass(frozen=True, slots=True)
class SQLiteOptions:
    """What a ``sqlite:`` URL says.

    Args:
        path: the database file, absolute.
        synchronous: ``FULL`` (default, power-loss safe), ``EXTRA`` or ``NORMAL``.
        timeout: seconds a writer waits for the lock held by another connection.
    """

    path: str
    synchronous: str = "FULL"
    timeout: float = 5.0


def parse_sqlite_url(url: str) -> SQLiteOptions:
    """Parse ``sqlite:///relative.db`` or ``sqlite:////absolute.db[?synchronous=NORMAL]``.

    A relative path is resolved against the current directory now.

    Raises:
        ConfigurationError: the URL is malformed, names no file, names ``:memory:``, or
            has an unknown or invalid option.
    """
    hint = "use sqlite:///relative/path.db or sqlite:////absolute/path.db"
    parts = urlsplit(url)
    if parts.scheme.lower() != "sqlite" or parts.netloc or not parts.path.startswith("/"):
        raise ConfigurationError(f"invalid SQLite URL {url!r}: {hint}")
    path = unquote(parts.path[1:])
    if not path:
        raise ConfigurationError(f"SQLite URL {url!r} names no file: {hint}")
    if path == ":memory:" or path.startswith("file:"):
        raise ConfigurationError(
            f"SQLite URL {url!r}: in-memory and URI databases are not supported; "
            "use memory:// for an in-process store"
        )
    synchronous, timeout = "FULL", 5.0
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "synchronous" and value.upper() in _SYNC_MODES:
            synchronous = value.upper()
        elif key == "timeout":
            try:
                timeout = float(value)
            except ValueError:
                timeout = -1.0
            if not timeout >= 0:
                raise ConfigurationError(f"SQLite URL {url!r}: timeout must be seconds >= 0")
        else:
            raise ConfigurationError(
                f"SQLite URL {url!r}: unsupported option {key}={value!r} "
                f"(known: synchronous={'|'.join(_SYNC_MODES)}, timeout=SECONDS)"
            )
    return SQLiteOptions(os.path.abspath(path), synchronous, timeout)


def connect(options: SQLiteOptions) -> sqlite3.Connection:
    """Open the file in autocommit mode, switch it to WAL and migrate its schema.

    Raises:
        BackendUnavailableError: the file or its directory cannot be opened or written.
        ConfigurationError: the file is not a SQLite database, or its schema is newer.
    """
    path = options.path
    directory = os.path.dirname(path)
    where = f"cannot open SQLite store {path}"
    if not os.path.isdir(directory):
        raise BackendUnavailableError(f"{where}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK):
        # WAL needs the -wal and -shm files next to the database.
        raise BackendUnavailableError(f"{where}: directory {directory} is not writable")
    if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
        raise BackendUnavailableError(f"{where}: file is not readable and writable")
    try:
        conn = sqlite3.connect(path, timeout=options.timeout, isolation_level=None)
    except sqlite3.Error as exc:
        raise BackendUnavailableError(f"{where}: {exc}") from None
    try:
        (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if str(mode).lower() != "wal":
            raise BackendUnavailableError(f"{where}: WAL journal not available ({mode})")
        conn.execute(f"PRAGMA synchronous = {options.synchronous}")
        migrate(conn)
    except SchemaTooNewError as exc:
        conn.close()
        raise ConfigurationError(f"SQLite store {path}: {exc}") from None
    except sqlite3.OperationalError as exc:
        conn.close()
        raise translate(exc, where) from None
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise ConfigurationError(f"{where}: not a SQLite database, or corrupt ({exc})") from None
    except BaseException:
        conn.close()
        raise
    return conn


def translate(exc: sqlite3.DatabaseError, where: str) -> BackendError:
    """The Conveyor error for a driver error: :class:`BackendUnavailableError` when the
    result code says the store cannot serve now, :class:`BackendError` otherwise."""
    code = exc.sqlite_errorcode
    if code is not None and code & 0xFF in _UNAVAILABLE_CODES:
        return BackendUnavailableError(f"{where}: {exc}")
    return BackendError(f"{where}: {exc}")


@dataclass(frozen=True, slots=True)
class FileIdentity:
    """The file a path named when the store opened it."""

    device: int
    inode: int

    @classmethod
    def of(cls, path: str) -> FileIdentity:
        st = os.stat(path)
        return cls(st.st_dev, st.st_ino)


def moved_away(path: str, identity: FileIdentity) -> str | None:
    """How ``path`` stopped naming the file the store opened (deleted, replaced), or
    None while it still does.

    A connection keeps writing into a deleted or replaced file, where no other process
    (and no restart) will ever find what it wrote.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "was deleted"
    except OSError:
        return None  # cannot tell (a permission change, say): the next check will
    if (st.st_dev, st.st_ino) != (identity.device, identity.inode):
        return "was replaced by another file"
    return None


def transaction(conn: sqlite3.Connection, fn: Callable[[], T]) -> T:
    """Run ``fn`` in one write transaction on ``conn``: commit, or roll back on error."""
    # IMMEDIATE takes the write lock up front: a deferred transaction that reads and then
    # writes fails with SQLITE_BUSY_SNAPSHOT (no busy wait) when another process wrote.
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn()
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


# -- waking idle workers in this process --------------------------------------------
# Keyed by the file's resolved path, so an enqueue through any instance (one per event
# loop, say) wakes the waiters of every instance on the same file. Other processes'
# commits are seen through PRAGMA data_version instead.
Waiter = tuple[asyncio.AbstractEventLoop, asyncio.Event]
_waiters_lock = threading.Lock()
_waiters: dict[str, set[Waiter]] = {}


def subscribe(key: str, waiter: Waiter) -> None:
    """Have :func:`wake` set ``waiter``'s event (on its loop) for the file ``key``."""
    with _waiters_lock:
        _waiters.setdefault(key, set()).add(waiter)


def unsubscribe(key: str, waiter: Waiter) -> None:
    """Undo :func:`subscribe`."""
    with _waiters_lock:
        mine = _waiters.get(key)
        if mine is not None:
            mine.discard(waiter)
            if not mine:
                del _waiters[key]


def wake(key: str) -> None:
    """Wake every waiter on the file ``key``; safe from any thread."""
    with _waiters_lock:
        waiters = list(_waiters.get(key, ()))
    for loop, event in waiters:
        # A closed loop raises; its waiter unsubscribes itself when it unwinds.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(event.set)
