"""A torchrun worker for test_distributed: broadcast, rank 0's error reaching every rank, then rank 1 dies by
SIGKILL while rank 0 waits in a barrier."""

import os
import signal
import sys
import time

from gatelab import distributed
from gatelab.errors import GatelabError


def fails_on_main():
    assert distributed.is_main(), "on_main ran fn on another rank"
    raise GatelabError("bad file")


distributed.init(timeout=float(sys.argv[1]))
vocab = distributed.broadcast_object({"the": 0, "cat": 1} if distributed.is_main() else None)
start, stop = distributed.shard_bounds(10)
print(f"rank {distributed.rank()} vocab {sorted(vocab)} shard {start}-{stop}", flush=True)
if sys.argv[2] == "finish":
    try:
        distributed.on_main(fails_on_main)
    except GatelabError as exc:
        print(f"rank {distributed.rank()} on_main error: {exc}", flush=True)
if sys.argv[2] == "kill" and distributed.rank() == 1:
    os.kill(os.getpid(), signal.SIGKILL)
for _ in range(3 if sys.argv[2] == "finish" else 10**6):
    distributed.barrier()
    time.sleep(0.2)
distributed.shutdown()
