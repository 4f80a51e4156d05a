"""One worker process of `server.workers.Supervisor`, as the parent sees it: the process, the
socket its connections travel on, and what the parent knows of its state."""

import collections
import multiprocessing
import socket
import time
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess

from uvicorn.importer import import_from_string

from server.serve import AgentServer

HELD_UP_S = 0.5
"""A worker that has not taken a connection handed to it this long ago gets no more until it
does (its event loop is held up); a healthy one takes each within milliseconds."""


@dataclass
class Worker:
    """One worker process and the parent's end of the socket that carries its connections."""

    process: BaseProcess
    channel: socket.socket
    ready: bool = False
    started: bool = False
    """It has been ready once."""
    replacement: bool = False
    """Started by SIGHUP to replace a running worker."""
    added: bool = False
    """Started by SIGTTIN, beside the running workers."""
    retiring: bool = False
    """Retired (SIGHUP, SIGTTOU): asked to stop, and not started again when it exits."""
    handed: collections.deque[socket.socket] = field(default_factory=collections.deque)
    """The parent's copies of the connections handed to it that it has not yet said it took:
    dealt again to another worker if it exits first."""
    waiting_since: float = 0.0
    """When the oldest of those was handed over (`time.monotonic()`)."""
    heard: float = field(default_factory=time.monotonic)
    """When it last said anything (`time.monotonic()`)."""

    def held_up(self, now: float) -> bool:
        """Whether it has left a connection untaken for longer than a healthy worker would."""
        return bool(self.handed) and now - self.waiting_since > HELD_UP_S


def worker_main(app_factory: str, channel: socket.socket, log_level: str) -> None:
    """Serve the connections the parent hands over on `channel` (a worker process's job)."""
    app = import_from_string(app_factory)()
    AgentServer(app, log_level=log_level, handoff=channel).run()


def start_worker(
    app_factory: str, log_level: str, *, replacement: bool = False, added: bool = False
) -> Worker:
    """Start a worker process serving `app_factory`'s app, with a socket to hand it
    connections on."""
    parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    process = multiprocessing.get_context("spawn").Process(
        target=worker_main, args=(app_factory, child_end, log_level), name="agentgraph-worker"
    )
    process.start()
    child_end.close()
    parent_end.setblocking(False)
    return Worker(process=process, channel=parent_end, replacement=replacement, added=added)
