"""A torchrun worker for test_distributed: ESVI on a shard of a small synthetic corpus.

Each rank writes CHECKPOINT.rankN.json: the refusal of a world larger than the blocks, the blocks it
visited, in order, and the held-out perplexity (``finish``: also that of the stochastic block update,
whose checkpoint is CHECKPOINT.stochastic.rankN). ``kill`` makes
rank 1 die by SIGKILL in round 3, while rank 0 waits for its token.
"""

import json
import os
import signal
import sys

import torch

from gatelab import distributed
from gatelab.errors import GatelabError
from gatelab.vi import LDAVI, synthetic_lda

torch.set_num_threads(1)
mode, checkpoint = sys.argv[1], sys.argv[2]
distributed.init(timeout=8.0)
corpus, _ = synthetic_lda(n_docs=400, n_words=100, n_topics=3, doc_length=100, alpha=0.3, eta=0.1, seed=11)
train, held = corpus.subset(torch.arange(340)), corpus.subset(torch.arange(340, 400))
start, stop = distributed.shard_bounds(340)
shard = train.subset(torch.arange(start, stop))
result = {"rank": distributed.rank()}
try:
    LDAVI(3, algorithm="esvi", n_blocks=1).fit(shard)
except GatelabError as exc:
    result["refused"] = str(exc)

visits = []


class Recording(LDAVI):
    def _visit(self, data, T_block, block, state):
        visits.append(block)
        if mode == "kill" and distributed.rank() == 1 and len(visits) == 7:
            os.kill(os.getpid(), signal.SIGKILL)
        return super()._visit(data, T_block, block, state)


model = Recording(3, algorithm="esvi", esvi_update="incremental", n_blocks=3, max_iter=40, local_iter=5, seed=0)
model.fit(shard, checkpoint=checkpoint)
perplexity = model.perplexity(held)
result.update(visits=visits, perplexity=perplexity)
if mode == "finish":  # the stochastic block update, its step counts travelling with the tokens
    stochastic = LDAVI(3, algorithm="esvi", esvi_update="stochastic", n_blocks=3, max_iter=8, batch_size=50, seed=0)
    stochastic.fit(shard, checkpoint=f"{checkpoint}.stochastic")
    result["stochastic_perplexity"] = stochastic.perplexity(held)
with open(f"{checkpoint}.rank{distributed.rank()}.json", "w") as fh:
    json.dump(result, fh)
distributed.shutdown()
