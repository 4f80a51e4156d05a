"""Several server processes on one port: the parent accepts, and deals the connections out.

With uvicorn's own workers every process listens on the shared socket, and the first to wake
accepts every connection waiting: ten keep-alive clients that connect at once often all land
on one worker, which then does the work of two while the other idles. Here only the parent
listens. It hands each connection it accepts to the next worker in turn, over a Unix socket
(as Node's cluster module does), and each worker serves the connections it is handed with the
same app, limits and shutdown as a single process (`server.serve.AgentServer`). Each worker
says when it has taken connections; one that has left a connection untaken for half a second
(its event loop is held up) is passed over while another is not, and the connections a
worker never took before it exited are dealt to the others.

The parent deals only once every worker it started is ready, and restarts a worker that
dies. Each worker says from its event loop, about once a second, that the loop is running;
a worker silent for longer than the timeout (its loop is stuck: a blocking call, a loop
that never yields) is killed and started again, and the connections it had not taken go
to the others. On SIGHUP it replaces the workers one by one: once a new one is ready, an
old one is dealt no more connections and is asked to stop a second later, so the port never
stops serving (a new worker that cannot start its app ends the replacement, and the old
workers stay). SIGTTIN starts one more worker, SIGTTOU retires one as SIGHUP does (never
the last). On SIGINT or SIGTERM it stops accepting and asks each worker to stop, which
ends every stream in flight with its `error` event.
"""

import contextlib
import logging
import selectors
import signal
import socket
import time

from uvicorn.config import STARTUP_FAILURE

from app.errors import ConfigError, WorkerStartError
from server.serve import READY, TAKEN, WORKER_TIMEOUT_S
from server.worker_process import Worker, start_worker

logger = logging.getLogger(__name__)

CONNECTION = b"c"
"""The byte each handed-over connection travels with."""
BACKLOG = 2048
"""Connections the kernel queues before the parent accepts them (uvicorn's default)."""
ACCEPT_BATCH = 64
"""Connections accepted at most per wake-up, before the parent looks at its workers again."""
RETIRE_GRACE_S = 1.0
"""How long a retired worker (SIGHUP, SIGTTOU) goes on serving after its last new connection before
it is asked to stop: long enough to read the requests on the connections it just took."""
STOP_WAIT_S = 30.0
"""How long the parent waits for its workers to finish their graceful shutdown."""


def _listen(host: str, port: int) -> socket.socket:
    """Listen on `host`:`port`.

    Raises:
        ConfigError: the address cannot be listened on (in use, or not this machine's).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        listener = socket.create_server((host, port), family=family, backlog=BACKLOG)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    listener.setblocking(False)
    return listener


class Supervisor:
    """The parent process: one listening socket, `workers` processes serving from it."""

    def __init__(
        self,
        *,
        app_factory: str,
        host: str,
        port: int,
        workers: int,
        log_level: str,
        timeout_s: float = WORKER_TIMEOUT_S,
    ):
        self.app_factory = app_factory
        self.timeout_s = timeout_s
        """0: a silent worker is never killed."""
        self.log_level = log_level
        self.listener = _listen(host, port)
        shown = f"[{host}]" if ":" in host else host
        self.address = f"http://{shown}:{self.listener.getsockname()[1]}"
        self.size = workers
        self.workers: list[Worker] = []
        self.selector = selectors.DefaultSelector()
        self.turn = 0
        self.dealing = False
        self.stopping = False
        self.reloading = False
        self.resizes: list[int] = []
        """+1 for each SIGTTIN (add a worker), -1 for each SIGTTOU (remove one), not yet done."""
        self.to_retire: list[Worker] = []
        """Workers to stop, one as each new worker is ready (SIGHUP)."""
        self.retire_at: list[tuple[float, Worker]] = []
        """Retired workers, each with when to ask it to stop."""
        # Signals only mark the stop; the wake-up socket makes the select loop notice at once.
        self._wake_read, self._wake_write = socket.socketpair()
        for end in (self._wake_read, self._wake_write):
            end.setblocking(False)

    def run(self) -> None:
        """Serve until SIGINT or SIGTERM, then stop every worker; on SIGHUP, replace them;
        on SIGTTIN add one, on SIGTTOU remove one.

        Raises:
            WorkerStartError: a worker exited while its app was starting.
        """
        previous_wakeup = signal.set_wakeup_fd(self._wake_write.fileno())
        previous = {
            sig: signal.signal(sig, self._on_signal)
            for sig in (
                signal.SIGINT,
                signal.SIGTERM,
                signal.SIGHUP,
                signal.SIGTTIN,
                signal.SIGTTOU,
            )
        }
        self.selector.register(self._wake_read, selectors.EVENT_READ, None)
        try:
            for _ in range(self.size):
                self._add(start_worker(self.app_factory, self.log_level))
            logger.info("starting %d workers on %s", self.size, self.address)
            while not self.stopping:
                for key, _ in self.selector.select(self._until_due()):
                    self._handle(key.fileobj, key.data)
                if self.reloading:
                    self._reload()
                while self.resizes:
                    self._resize(self.resizes.pop(0))
                while self.retire_at and self.retire_at[0][0] <= time.monotonic():
                    self.retire_at.pop(0)[1].process.terminate()
                self._kill_silent()
        finally:
            self._stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(previous_wakeup)
            self.selector.close()
            for end in (self._wake_read, self._wake_write, self.listener):
                end.close()

    def _until_due(self) -> float | None:
        """Seconds until a retired worker is to be stopped or a silent one killed."""
        now = time.monotonic()
        due = [when - now for when, _ in self.retire_at[:1]]
        if self.timeout_s:
            due += [w.heard + self.timeout_s - now for w in self.workers if w.ready]
        return max(0.0, min(due)) if due else None

    def _kill_silent(self) -> None:
        """Kill every ready worker that has been silent for longer than the timeout: it is
        started again when it exits, as any worker that dies."""
        if not self.timeout_s:
            return
        now = time.monotonic()
        for worker in self.workers:
            if worker.ready and now - worker.heard > self.timeout_s:
                logger.error(
                    "worker %s has been silent for %.0f s (its event loop is stuck): killing it",
                    worker.process.pid,
                    now - worker.heard,
                )
                worker.ready = False
                worker.process.kill()

    def _on_signal(self, sig: int, frame: object) -> None:
        if sig == signal.SIGHUP:
            self.reloading = True
            return
        if sig in (signal.SIGTTIN, signal.SIGTTOU):
            self.resizes.append(1 if sig == signal.SIGTTIN else -1)
            return
        logger.info("%s: stopping the workers", signal.Signals(sig).name)
        self.stopping = True

    def _serving(self) -> list[Worker]:
        """The workers that are neither retired nor due to be (SIGHUP), starting ones included."""
        return [w for w in self.workers if not w.retiring and w not in self.to_retire]

    def _reload(self) -> None:
        """Start a new worker for each running one; each new one, once ready, retires one."""
        self.reloading = False
        old = self._serving()
        logger.info("SIGHUP: replacing %d workers", len(old))
        self.to_retire.extend(old)
        for _ in old:
            self._add(start_worker(self.app_factory, self.log_level, replacement=True))

    def _resize(self, change: int) -> None:
        """Start one more worker, or retire one (but never the last)."""
        serving = self._serving()
        if change > 0:
            logger.info("SIGTTIN: adding a worker (%d in all)", len(serving) + 1)
            self._add(start_worker(self.app_factory, self.log_level, added=True))
        elif len(serving) > 1:
            logger.info("SIGTTOU: removing a worker (%d in all)", len(serving) - 1)
            self._retire(serving[-1])
        else:
            logger.warning("SIGTTOU: keeping the last worker")

    def _retire(self, worker: Worker) -> None:
        """Deal the worker no more connections, and ask it to stop a moment later."""
        worker.ready = False
        worker.retiring = True
        self.retire_at.append((time.monotonic() + RETIRE_GRACE_S, worker))

    def _add(self, worker: Worker) -> None:
        self.workers.append(worker)
        self.selector.register(worker.channel, selectors.EVENT_READ, worker)
        self.selector.register(worker.process.sentinel, selectors.EVENT_READ, worker)

    def _handle(self, source: object, worker: Worker | None) -> None:
        if worker is not None and worker not in self.workers:
            return  # the other event of a worker replaced earlier in this round
        if source is self._wake_read:
            self._wake_read.recv(64)
        elif source is self.listener:
            self._accept()
        elif worker is not None and source is worker.channel:
            self._hear(worker)
        elif worker is not None:
            self._replace(worker)

    def _hear(self, worker: Worker) -> None:
        """A worker said it is ready or took connections, or closed its end (it is stopping)."""
        while True:
            try:
                message = worker.channel.recv(256)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                message = b""
            if not message:
                worker.ready = False
                self.selector.unregister(worker.channel)
                self._deal_again(worker)
                return
            worker.heard = time.monotonic()
            if taken := message.count(TAKEN):
                for _ in range(min(taken, len(worker.handed))):
                    worker.handed.popleft().close()
                worker.waiting_since = time.monotonic()
            if READY in message:
                self._ready(worker)

    def _ready(self, worker: Worker) -> None:
        worker.ready = worker.started = True
        if self.to_retire:
            self._retire(self.to_retire.pop(0))
        if not self.dealing and all(w.ready for w in self.workers):
            # From now on connections go to whoever is ready; none are dealt before every
            # first worker is, so that the first clients are not all on the first worker.
            self.dealing = True
            self.selector.register(self.listener, selectors.EVENT_READ, None)
            logger.info("serving on %s with %d workers", self.address, self.size)

    def _replace(self, worker: Worker) -> None:
        """A worker exited: start another, unless it could not start its app at all."""
        worker.process.join()
        self.selector.unregister(worker.process.sentinel)
        with contextlib.suppress(KeyError):  # unless it closed its end first
            self.selector.unregister(worker.channel)
        worker.channel.close()
        self.workers.remove(worker)
        self._deal_again(worker)
        if worker.retiring:
            logger.info("worker %s stopped: retired", worker.process.pid)
            return
        if worker in self.to_retire:
            # It died before its replacement (already starting) was ready.
            self.to_retire.remove(worker)
            return
        if worker.replacement and not worker.started:
            logger.error(
                "a new worker exited while starting (code %s; its log above says why): "
                "keeping the running ones",
                worker.process.exitcode,
            )
            self.to_retire.clear()
            return
        if worker.added and not worker.started:
            logger.error(
                "an added worker exited while starting (code %s; its log above says why)",
                worker.process.exitcode,
            )
            return
        if worker.process.exitcode == STARTUP_FAILURE:
            self.stopping = True
            raise WorkerStartError(
                "a server worker process could not start its app (its log above says why)"
            )
        logger.warning(
            "worker %s exited (code %s): starting another",
            worker.process.pid,
            worker.process.exitcode,
        )
        self._add(start_worker(self.app_factory, self.log_level))

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                connection, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            self._deal(connection)

    def _next(self, passed: list[Worker]) -> Worker | None:
        """The next ready worker in turn (but those `passed`), passing over one that is held up
        while another is not."""
        count = len(self.workers)
        ready = [
            worker
            for worker in (self.workers[(self.turn + i) % count] for i in range(count))
            if worker.ready and worker not in passed
        ]
        if not ready:
            return None
        now = time.monotonic()
        chosen = next((worker for worker in ready if not worker.held_up(now)), ready[0])
        self.turn = self.workers.index(chosen) + 1
        return chosen

    def _deal_again(self, worker: Worker) -> None:
        """Deal the connections a worker that stopped never took to the others."""
        while worker.handed:
            self._deal(worker.handed.popleft())

    def _deal(self, connection: socket.socket) -> None:
        """Hand the connection to the next worker, keeping a copy until it says it took it;
        close it when no worker can take it."""
        passed: list[Worker] = []
        while (worker := self._next(passed)) is not None:
            try:
                socket.send_fds(worker.channel, [CONNECTION], [connection.fileno()])
            except BlockingIOError:
                # Its queue is full: it has been held up for long. Try the next.
                passed.append(worker)
                continue
            except OSError as exc:
                # It closed its end: it is stopping.
                logger.warning("worker %s takes no connections: %s", worker.process.pid, exc)
                worker.ready = False
                continue
            if not worker.handed:
                worker.waiting_since = time.monotonic()
            worker.handed.append(connection)
            return
        logger.error("no worker could take a connection: closing it")
        connection.close()

    def _stop(self) -> None:
        """Ask every worker to stop (they end their streams), and wait for them."""
        self.stopping = True
        for worker in self.workers:
            worker.process.terminate()  # SIGTERM, unless it has exited
        deadline = time.monotonic() + STOP_WAIT_S
        for worker in self.workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                logger.error("worker %s did not stop in time: killing it", worker.process.pid)
                worker.process.kill()
                worker.process.join()
            worker.channel.close()
            while worker.handed:
                worker.handed.popleft().close()
