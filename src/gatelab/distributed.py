"""A thin layer over ``torch.distributed`` for runs launched with ``torchrun``.

    torchrun --standalone --nproc_per_node 2 -m gatelab word2vec train corpus.txt --out v.bin

``init()`` joins the process group that torchrun's environment describes (gloo
on CPU, NCCL for CUDA) with a finite timeout, or returns False in a plain
single-process run, so the same code runs either way. ``rank``,
``world_size``, ``shard_bounds``, ``broadcast_object``, ``on_main`` and ``all_gather_object`` cover what the
trainers need.

A lost worker ends the run loudly. Each process beats a counter in the
rendezvous store once a second from a daemon thread; when a peer's counter
stops moving for ``lost_after`` seconds (a SIGKILL, a dead node) the others
print one line naming the lost rank and exit with status 1, rather than wait
forever in a collective. A process that finishes normally marks itself done
first (``shutdown``), so a fast rank finishing early is not mistaken for a lost one.
"""

from __future__ import annotations

import datetime
import os
import sys
import threading
import time
from typing import Any, Callable, TypeVar

import torch
import torch.distributed as dist

from gatelab.errors import GatelabError

DEFAULT_TIMEOUT = 600.0  # seconds; the CLI's --dist-timeout
HEARTBEAT_SECONDS = 1.0
_PREFIX = "gatelab/heartbeat"

T = TypeVar("T")
_watchdog: "_Watchdog | None" = None


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher setting RANK and WORLD_SIZE)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init(timeout: float = DEFAULT_TIMEOUT, device: str | torch.device = "cpu") -> bool:
    """Join torchrun's process group; returns whether this is a multi-process run.

    ``timeout`` bounds every collective and the time before a silent peer is
    declared lost. The backend is NCCL for a CUDA device, else gloo.
    """
    global _watchdog
    if not timeout > 0:
        raise GatelabError(f"the distributed timeout must be a positive number of seconds, got {timeout}")
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    if not launched():
        return False
    if not dist.is_available():
        raise GatelabError("this torch build has no torch.distributed; run a single process instead")
    try:
        world = int(os.environ["WORLD_SIZE"])
        int(os.environ["RANK"])
    except ValueError:
        raise GatelabError("RANK and WORLD_SIZE must be integers (set by torchrun)") from None
    backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
    if world > 1:
        _watchdog = _Watchdog(dist.get_rank(), world, lost_after=min(timeout, 30.0))
        _watchdog.start()
    return world > 1


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Whether this process is rank 0, the one that writes shared outputs."""
    return rank() == 0


def shard_bounds(n: int, part: int | None = None, parts: int | None = None) -> tuple[int, int]:
    """The contiguous ``[start, stop)`` of ``n`` items that rank ``part`` of ``parts`` owns (balanced to one item)."""
    part = rank() if part is None else part
    parts = world_size() if parts is None else parts
    if not 0 <= part < parts:
        raise GatelabError(f"part {part} is outside 0..{parts - 1}")
    return n * part // parts, n * (part + 1) // parts


def _collective(fn: Callable[[], T]) -> T:
    """Run a collective; if it fails because a peer vanished, let the watchdog name it before giving up."""
    try:
        return fn()
    except (RuntimeError, dist.DistError):
        if _watchdog is not None:
            _watchdog.verdict(wait=_watchdog.lost_after + 2 * HEARTBEAT_SECONDS)
        raise


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (``obj`` is ignored elsewhere); a no-op in a single process."""
    if not is_distributed():
        return obj
    box = [obj if rank() == src else None]
    _collective(lambda: dist.broadcast_object_list(box, src=src))
    return box[0]


def on_main(fn: Callable[[], T]) -> T:
    """``fn()`` run by rank 0 alone (reading a file, counting a corpus) and its result broadcast to every
    rank; a GatelabError it raises is raised on every rank, so all stop with the same one line. A plain
    call in a single process."""
    if not is_distributed():
        return fn()
    result: Any = None
    if is_main():
        try:
            result = fn()
        except GatelabError as exc:
            result = exc
    result = broadcast_object(result)
    if isinstance(result, GatelabError):
        raise GatelabError(str(result))
    return result


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank; ``[obj]`` in a single process."""
    if not is_distributed():
        return [obj]
    out = [None] * world_size()
    _collective(lambda: dist.all_gather_object(out, obj))
    return out


def all_reduce_(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Sum (or average, ``op="mean"``) ``tensor`` over all ranks, in place."""
    if op not in ("sum", "mean"):
        raise GatelabError(f"unknown reduction {op!r}; accepted: sum, mean")
    if is_distributed():
        _collective(lambda: dist.all_reduce(tensor))
        if op == "mean":
            tensor /= world_size()
    return tensor


def barrier() -> None:
    if is_distributed():
        _collective(dist.barrier)


def shutdown() -> None:
    """Mark this rank done (so peers do not report it lost) and leave the process group."""
    global _watchdog
    if _watchdog is not None:
        _watchdog.finish()
        _watchdog = None
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _lost(message: str) -> None:
    print(f"gatelab: error: {message}", file=sys.stderr, flush=True)
    os._exit(1)  # a collective may hold the main thread; nothing else would end the process


class _Watchdog(threading.Thread):
    """Beats this rank's counter in the rendezvous store and watches the others' counters."""

    def __init__(self, my_rank: int, world: int, lost_after: float):
        super().__init__(name="gatelab-heartbeat", daemon=True)
        self.rank, self.world, self.lost_after = my_rank, world, lost_after
        self.store = dist.TCPStore(
            os.environ["MASTER_ADDR"],
            int(os.environ["MASTER_PORT"]),
            is_master=False,
            timeout=datetime.timedelta(seconds=max(lost_after, 5.0)),
        )
        self._stop = threading.Event()
        self._stale: int | None = None
        self._decided = threading.Event()

    def run(self) -> None:
        last = {r: (-1, time.monotonic()) for r in range(self.world) if r != self.rank}
        while not self._stop.is_set():
            try:
                self.store.add(f"{_PREFIX}/{self.rank}", 1)
                now = time.monotonic()
                for r, (count, since) in list(last.items()):
                    if self.store.check([f"{_PREFIX}/done/{r}"]):
                        del last[r]
                        continue
                    beat = self.store.add(f"{_PREFIX}/{r}", 0)
                    if beat != count:
                        last[r] = (beat, now)
                    elif now - since > self.lost_after:
                        self._stale = r
                        self._decided.set()
                        _lost(
                            f"lost rank {r} of {self.world}: no heartbeat for {now - since:.0f} s "
                            f"(killed or its machine is gone); rank {self.rank} stops too"
                        )
            except Exception as exc:  # the store itself is gone: the launcher or rank 0's node died
                if self._stop.is_set():
                    return
                _lost(
                    f"rank {self.rank} lost the rendezvous store at {os.environ.get('MASTER_ADDR')}:"
                    f"{os.environ.get('MASTER_PORT')} ({type(exc).__name__}); the run cannot go on"
                )
            self._stop.wait(HEARTBEAT_SECONDS)

    def verdict(self, wait: float) -> None:
        """Block until a lost peer is named (the process then exits) or ``wait`` seconds pass."""
        self._decided.wait(wait)

    def finish(self) -> None:
        self._stop.set()
        try:
            self.store.set(f"{_PREFIX}/done/{self.rank}", "1")
        except Exception:
            pass
