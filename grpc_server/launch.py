"""Run ``pyomni serve`` as a child process: for end-to-end tests, benchmarks and scripts.

The child listens on a free port (``127.0.0.1:0``); its JSON "serving" log
line says which, and :class:`ServerProcess` waits for it. Stopping sends
SIGTERM, the signal a process manager sends, so the graceful path is the one
exercised; :meth:`ServerProcess.kill` is the crash (SIGKILL), for the crash tests.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from pyomni import errors

__all__ = ["ServerProcess"]


class ServerProcess:
    """``pyomni serve`` in a child process.

    Parameters
    ----------
    data_dir : path
        The server's data directory.
    args : sequence of str
        More ``pyomni serve`` flags (``["--stores", "60"]``).
    start_timeout : float
        Seconds to wait for the server to listen.

    Examples
    --------
    >>> import tempfile, pyomni                                  # doctest: +SKIP
    >>> with ServerProcess(tempfile.mkdtemp()) as server:         # doctest: +SKIP
    ...     pyomni.Client(server.address).echo(b"hi")
    b'hi'
    """

    def __init__(self, data_dir: str | os.PathLike[str], args: Sequence[str] = (), *,
                 start_timeout: float = 60.0) -> None:
        self.data_dir = Path(data_dir)
        self.args = list(args)
        self.start_timeout = start_timeout
        self.process: subprocess.Popen[str] | None = None
        self.address = ""
        self.log: list[dict[str, object]] = []
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None

    def start(self) -> ServerProcess:
        """Start the child and wait until it listens."""
        cmd = [sys.executable, "-m", "pyomni.cli", "serve", "--address", "127.0.0.1:0", "--metrics-port", "0",
               "--data-dir", str(self.data_dir), *self.args]
        self.process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read_log, name="pyomni-serve-log", daemon=True)
        self._reader.start()
        if not self._ready.wait(self.start_timeout) or not self.address:
            self.kill()
            raise errors.Unavailable(f"pyomni serve did not start: {self.log[-3:]}")
        return self

    def _read_log(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        for line in self.process.stderr:
            try:
                record = json.loads(line)
            except ValueError:
                record = {"message": line.rstrip()}
            self.log.append(record)
            if record.get("message") == "serving":
                self.address = str(record["address"])
                self._ready.set()
        self._ready.set()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait for the graceful exit; returns the exit status."""
        if self.process is None:
            return 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self, timeout: float = 30.0) -> int | None:
        """SIGKILL the child and reap it: a crash, as ``kill -9`` or the OOM killer makes one.

        Nothing runs in the child after the signal: no handler, no graceful drain, no final
        snapshot, so what survives is exactly what its data directory held at that instant.
        Returns once the process is gone (its data-directory lock released with it) and the
        log reader has drained its stderr, so :attr:`log` holds every line the child wrote.
        Returns the exit status (``-9`` when this call killed it, the child's own status if it
        had already exited), or None if the child was never started; safe to call twice.
        """
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.kill()
        status = self.process.wait(timeout)
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(timeout)
        return status

    def messages(self) -> list[str]:
        """The log messages so far."""
        return [str(r.get("message")) for r in self.log]

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.stop()
        deadline = time.monotonic() + 5
        while self.process is not None and self.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
