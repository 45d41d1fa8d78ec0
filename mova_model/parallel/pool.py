"""The host's side of a parallel run: starts the worker processes, sends them jobs, relays their progress, and
stops them (on request, on Cancel's failure to stop, or when one dies).

Workers are separate Python processes (``worker_main.py``), one per device, started with ``subprocess`` so that
they import nothing of the host (ComfyUI's ``main.py`` would run again under multiprocessing's spawn). They
meet through a ``torch.distributed.TCPStore`` the pool serves on 127.0.0.1 only (the rendezvous of their
process group, under a random prefix), talk to each other over the loopback interface (gloo and NCCL's sockets;
NCCL's GPU transfers take NVLink or PCIe), and each one offers the pool a ``multiprocessing.connection`` socket
on 127.0.0.1 guarded by a random key. Everything here is plain Python and torch (no ComfyUI import).
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from datetime import timedelta
from multiprocessing.connection import Client, wait
from pathlib import Path
from typing import Callable

import torch.distributed as dist

from . import channel
from .plan import ParallelPlan

log = logging.getLogger(__name__)
WORKER_MAIN = Path(__file__).resolve().parent / "worker_main.py"
LOG_TAIL = 20  # lines of a failed worker's log quoted in the error
LOOPBACK = ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")  # Linux's loopback interface for the workers' sockets


class WorkerError(RuntimeError):
    """A worker failed or died; the message says which, why, and what happens next."""


class RunCancelled(Exception):
    """Every worker stopped the run on the host's Cancel."""


def child_device(device: str) -> tuple[str, dict[str, str]]:
    """(the device a worker sees, its extra environment) for a host device name: 'cuda:N' becomes the worker's
    only GPU (CUDA_VISIBLE_DEVICES, counted among the GPUs the host sees); 'cpu' stays."""
    if device == "cpu":
        return "cpu", {}
    if not device.startswith("cuda:"):
        raise ValueError(f"device {device!r}: use cuda:N or cpu")
    index = int(device.split(":", 1)[1])
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    physical = visible.split(",")[index].strip() if visible else str(index)
    return "cuda:0", {"CUDA_VISIBLE_DEVICES": physical}


def _signal_name(code: int) -> str:
    if code >= 0:
        return f"exit code {code}"
    try:
        return f"signal {signal.Signals(-code).name}"
    except ValueError:
        return f"signal {-code}"


class WorkerPool:
    """``len(devices)`` worker processes running ``plan`` (``devices``: 'cuda:N' or 'cpu', one per process).
    ``timeout``: seconds a collective may wait on another process (the process group's timeout)."""

    def __init__(self, plan: ParallelPlan, devices: list[str], timeout: float = 1800.0,
                 start_timeout: float = 300.0):
        if len(devices) != plan.world:
            raise ValueError(f"{len(devices)} devices for a plan of {plan.world} processes")
        self.plan, self.devices = plan, list(devices)
        self.timeout, self.start_timeout = timeout, start_timeout
        self.procs: list[subprocess.Popen] = []
        self.conns: list = []
        self.pids: list[int] = []
        self.store = None
        self.log_dir: Path | None = None
        self.models_key: str | None = None  # the model description the workers hold
        _pools.add(self)

    @property
    def alive(self) -> bool:
        return bool(self.procs) and all(p.poll() is None for p in self.procs)

    def start(self) -> None:
        """Start the workers and wait until all have joined the run (a WorkerError when one cannot)."""
        token, authkey = secrets.token_hex(16), secrets.token_bytes(32)
        listen = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # the store listens on the loopback only
        listen.bind(("127.0.0.1", 0))
        listen.listen(64)
        port = listen.getsockname()[1]
        self.store = dist.TCPStore("127.0.0.1", port, is_master=True, wait_for_workers=False,
                                   timeout=timedelta(seconds=self.start_timeout), master_listen_fd=listen.detach())
        self.log_dir = Path(tempfile.mkdtemp(prefix="mova-parallel-"))
        cpu_threads = max(1, (os.cpu_count() or 1) // self.plan.world)
        for rank, device in enumerate(self.devices):
            seen_as, extra = child_device(device)
            env = {**os.environ, **extra, "MOVA_PARALLEL_RANK": str(rank), "MOVA_PARALLEL_WORLD": str(self.plan.world),
                   "MOVA_PARALLEL_PLAN": f"{self.plan.cfg},{self.plan.ulysses},{int(self.plan.shard_weights)}",
                   "MOVA_PARALLEL_TOKEN": token, "MOVA_PARALLEL_AUTHKEY": authkey.hex(),
                   "MOVA_PARALLEL_STORE": f"127.0.0.1:{self.store.port}", "MOVA_PARALLEL_DEVICE": seen_as,
                   "MOVA_PARALLEL_TIMEOUT": str(self.timeout), "MOVA_PARALLEL_PARENT": str(os.getpid())}
            for name in LOOPBACK:  # gloo and NCCL between the workers on the loopback (the user's choice kept)
                env.setdefault(name, "lo")
            if seen_as == "cpu":
                env["OMP_NUM_THREADS"] = str(cpu_threads)
            with open(self.log_dir / f"worker{rank}.log", "wb") as out:
                self.procs.append(subprocess.Popen([sys.executable, "-u", str(WORKER_MAIN)], env=env, stdout=out,
                                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        deadline = time.monotonic() + self.start_timeout
        for rank in range(self.plan.world):
            key = f"{token}/address/{rank}"
            while not self.store.check([key]):
                self._check_processes("while starting")
                if time.monotonic() > deadline:
                    self._fail(rank, f"did not start within {self.start_timeout:g} s")
                time.sleep(0.05)
            self.conns.append(Client(("127.0.0.1", int(self.store.get(key))), authkey=authkey))
        ready = self._collect({"ready"}, deadline=deadline, what="while joining the others")
        self.pids = [ready[r]["pid"] for r in range(self.plan.world)]
        log.info("MOVA parallel: %d workers on %s (%s)", self.plan.world, ", ".join(self.devices), self.plan.describe())

    def run(self, kind: str, job: dict, on_message: Callable[[str, dict], None] | None = None,
            interrupted: Callable[[], bool] | None = None, timeout: float | None = None) -> dict | None:
        """Send job ``kind`` to every worker and wait: rank 0's result (None for jobs without one). Progress and
        log messages go to ``on_message(kind, values)``; ``interrupted()`` True sends Cancel (RunCancelled once
        all have stopped). A WorkerError (the pool stopped) when a worker dies, or fails where the others did
        not, or nothing arrives for ``timeout`` seconds."""
        if not self.alive:
            raise WorkerError("the MOVA parallel workers are not running")
        for conn in self.conns:
            channel.send(conn, kind, **job)
        replies = self._collect({"result", "done", "error", "cancelled"}, on_message=on_message,
                                interrupted=interrupted, silence=timeout, what=f"during the {kind} job")
        errors = {r: m for r, m in replies.items() if m["kind"] == "error"}
        if errors:
            texts = {m["text"] for m in errors.values()}
            first = min(errors)
            if len(errors) < self.plan.world or len(texts) > 1:  # the workers may be out of step: start afresh
                self.stop()
                raise WorkerError(f"MOVA parallel worker {first} ({self.devices[first]}) failed: {errors[first]['text']}"
                                  " (the workers were stopped; the next run starts new ones)")
            raise WorkerError(errors[first]["text"])
        if any(m["kind"] == "cancelled" for m in replies.values()):
            raise RunCancelled()
        result = replies[0]
        return None if result["kind"] == "done" else result

    def stop(self) -> None:
        """Ask the workers to leave, then terminate (and kill) what is left; frees their devices' memory."""
        for conn in self.conns:
            try:
                channel.send(conn, "stop")
            except (OSError, ValueError):
                pass
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for conn in self.conns:
            conn.close()
        self.procs, self.conns, self.store, self.models_key = [], [], None, None
        if self.log_dir is not None:
            shutil.rmtree(self.log_dir, ignore_errors=True)
            self.log_dir = None

    # -- internals

    def _collect(self, final: set[str], on_message=None, interrupted=None, silence=None, deadline=None,
                 what: str = "") -> dict[int, dict]:
        """Read every worker's messages until each has sent one of ``final``: {rank: message}."""
        replies: dict[int, dict] = {}
        index = {id(conn): rank for rank, conn in enumerate(self.conns)}
        cancel_sent, last, first_error = False, time.monotonic(), None
        while len(replies) < len(self.conns):
            waiting = [c for r, c in enumerate(self.conns) if r not in replies]
            for conn in wait(waiting, timeout=0.05):
                rank = index[id(conn)]
                try:
                    kind, values = channel.receive(conn)
                except (EOFError, OSError):
                    self._wait_exit(rank)
                    self._check_processes(what)
                    self._fail(rank, f"closed its connection {what}")
                last = time.monotonic()
                if kind in final:
                    replies[rank] = {"kind": kind, **values}
                    if kind == "error" and first_error is None:
                        first_error = last
                elif kind == "log":
                    log.info("MOVA parallel: %s", values["text"])
                elif on_message is not None:
                    on_message(kind, values)
            self._check_processes(what)
            now = time.monotonic()
            if interrupted is not None and not cancel_sent and interrupted():
                for conn in self.conns:
                    channel.send(conn, "cancel")
                cancel_sent = True
            if first_error is not None and now - first_error > 30:  # the others are stuck after a failure
                break
            if (silence is not None and now - last > silence) or (deadline is not None and now > deadline):
                self.stop()
                raise WorkerError(f"the MOVA parallel workers sent nothing for {silence or self.start_timeout:g} s "
                                  f"{what} (stopped them; the next run starts new ones)")
        return replies

    def _wait_exit(self, rank: int, seconds: float = 3.0) -> None:
        try:
            self.procs[rank].wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            pass

    def _check_processes(self, what: str) -> None:
        for rank, proc in enumerate(self.procs):
            code = proc.poll()
            if code is not None:
                self._fail(rank, f"stopped ({_signal_name(code)}) {what}")

    def _fail(self, rank: int, problem: str) -> None:
        tail = self._log_tail(rank)
        hint = (" A kill by SIGKILL is often the out-of-memory killer: check the host's and the GPU's memory."
                if "SIGKILL" in problem else "")
        self.stop()
        raise WorkerError(f"MOVA parallel worker {rank} ({self.devices[rank]}) {problem}.{hint} The other workers "
                          f"were stopped and ComfyUI goes on; the next run starts new workers."
                          + (f"\nLast lines of its log:\n{tail}" if tail else ""))

    def _log_tail(self, rank: int) -> str:
        if self.log_dir is None:
            return ""
        path = self.log_dir / f"worker{rank}.log"
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-LOG_TAIL:])


_pools: "weakref.WeakSet[WorkerPool]" = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for pool in list(_pools):
        if pool.procs:
            pool.stop()
