"""The merger thread. A merge of files of index_background_merge_bytes or more (a gigabyte merge
takes seconds) runs there without the write lock, so adds go on meanwhile. The writer hands it
the inputs with the lock held (start); the thread names the merged file under the lock, merges
without it, then hands the result back under the lock (the Index's finish, which swaps it in
only if its inputs are still in place). A failed merge is raised to the next writer
(raise_error); a close stops a merge under way at its next chunk.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from tsunagi.errors import StorageError
from tsunagi.ledger.index import merge
from tsunagi.ledger.index.run import Run
from tsunagi.ledger.index.runfile import Entry


class Merger:
    """The thread and its handshake with the writer; ``changed`` shares the write mutex.

    ``inputs`` are the runs of the merge under way (or due), () when there is none; ``error``
    is what stopped the last one; ``closing`` turns true once with close."""

    def __init__(self, folder: Path, mutex: threading.Lock,
                 entry_for: Callable[[list[Run]], Entry | None],
                 finish: Callable[[list[Run], Run | None, BaseException | None], None]):
        self.changed = threading.Condition(mutex)
        self.inputs: tuple[Run, ...] = ()
        self.error: BaseException | None = None
        self.closing = False
        self._folder, self._entry_for, self._finish = folder, entry_for, finish
        self._thread: threading.Thread | None = None

    def start(self, inputs: list[Run]) -> None:
        """Hands ``inputs`` to the thread (started if it is not running). The mutex is held."""
        self.inputs = tuple(inputs)
        self.changed.notify_all()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="tsunagi-index-merge",
                                            daemon=True)
            self._thread.start()

    def wait(self) -> None:
        """Returns once no merge is under way (or due)."""
        with self.changed:
            while self.inputs and self.error is None and not self.closing:
                self.changed.wait()

    def close(self) -> None:
        """Stops the thread: a merge under way is abandoned at its next chunk."""
        with self.changed:
            self.closing = True
            self.changed.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()

    def raise_error(self) -> None:
        if self.error is not None:
            raise StorageError(f"a background merge of the index failed: "
                               f"{self.error}") from self.error

    def _run(self) -> None:
        """Merges self.inputs without the mutex, then hands the result to finish under it."""
        while True:
            with self.changed:
                while not self.inputs and not self.closing:
                    self.changed.wait()
                if self.closing:
                    self.inputs = ()
                    self.changed.notify_all()
                    return
                inputs = list(self.inputs)
                entry = self._entry_for(inputs)
            merged, error = None, None
            try:
                merged = merge.merged(self._folder, inputs, entry, lambda: self.closing)
            except merge.Interrupted:
                pass
            except Exception as exc:  # noqa: BLE001 - raised to the next add, not lost
                error = exc
            with self.changed:
                self.inputs = ()
                self._finish(inputs, merged, error)
                self.changed.notify_all()
