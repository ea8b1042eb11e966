"""The two classifiers over skeleton sequences (B, T, J, 3): the paper's deep BLSTM and the ST-GCN peer.

``BLSTMClassifier``: a stack of bidirectional LSTM layers over per-frame joint vectors, mean-pooled over time, then
a linear classifier. Every intermediate layer also has a pooled linear head: with gradient injection on, their
cross-entropy losses (``forward_all``) inject gradient straight into the lower layers (deep supervision). The
paper's depth and width are not in any text we could read; ours (``gatelab.activity.ActivityConfig``, where the
choice is explained): 2 layers of 64 units a direction, dropout 0.3 between layers.

``STGCN``: Yan, Xiong & Lin (AAAI 2018), spatial-temporal graph convolution with the "spatial" partition (root,
centripetal, centrifugal neighbours), learnable edge importance, 9-frame temporal convolutions and residual
blocks; the paper's 9 blocks of 64/64/64/128/128/128/256/256/256 channels, strides 2 at the 4th and 7th.

``Ensemble``: several of either, trained side by side (``ActivityConfig.ensemble``), read as one classifier.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gatelab.activity.skeleton import BONES, layout_joints
from gatelab.errors import GatelabError

ARCHS = ("blstm", "stgcn")
STGCN_CHANNELS = (64, 64, 64, 128, 128, 128, 256, 256, 256)


def parents(layout: str) -> list[int]:
    """Each joint's neighbour one bone nearer the root (the hip centre, else joint 0); the root is its own parent."""
    names = layout_joints(layout)
    index = {n: i for i, n in enumerate(names)}
    root = index.get("hip_center", 0)
    parent, frontier = {root: root}, [root]
    while frontier:
        nxt = []
        for i in frontier:
            for a, b in BONES[layout]:
                for u, v in ((index[a], index[b]), (index[b], index[a])):
                    if u == i and v not in parent:
                        parent[v] = i
                        nxt.append(v)
        frontier = nxt
    return [parent.get(j, j) for j in range(len(names))]  # a joint no bone reaches is its own parent: bone 0


def feature_count(motion: bool, bones: bool, motion2: bool) -> int:
    """Channels a joint has per frame: 3 for the position, plus 3 for each feature switched on."""
    return 3 * (1 + motion + bones + motion2)


def frame_features(x: torch.Tensor, motion: bool, bones: bool = False, motion2: bool = False, parent=None):
    """Per-joint features (B, T, J, C) from positions (B, T, J, 3): the positions, then with ``motion`` the
    displacement since the previous frame, with ``bones`` the vector from the joint's ``parent`` (0 at the root),
    with ``motion2`` the displacement since two frames back (differences are 0 before the first frame)."""
    parts = [x]
    if motion:
        parts.append(x - torch.cat([x[:, :1], x[:, :-1]], dim=1))
    if bones:
        parts.append(x - x[:, :, parent])
    if motion2:
        parts.append(x - torch.cat([x[:, :1], x[:, :1], x[:, :-2]], dim=1))
    return torch.cat(parts, dim=-1) if len(parts) > 1 else x


class BLSTMClassifier(nn.Module):
    """Deep bidirectional LSTM over frames; mean pooling over time; auxiliary heads on intermediate layers.

    With ``motion`` each frame's vector also holds the joints' displacement since the previous frame; with
    ``input_norm`` a batch normalisation of each input feature puts positions and the much smaller displacements
    on one scale.
    """

    def __init__(
        self,
        joints: int,
        classes: int,
        hidden: int = 128,
        layers: int = 3,
        dropout: float = 0.3,
        motion=False,
        input_norm=False,
        bones=False,
        motion2=False,
        parent=None,
    ):
        super().__init__()
        if bones and (parent is None or len(parent) != joints):
            raise GatelabError(f"bone features need each of the {joints} joints' parent, got {parent!r}")
        self.motion, self.bones, self.motion2, self.parent = motion, bones, motion2, parent
        features = joints * feature_count(motion, bones, motion2)
        self.input_norm = nn.BatchNorm1d(features) if input_norm else None
        self.lstms = nn.ModuleList(
            nn.LSTM(features if i == 0 else 2 * hidden, hidden, batch_first=True, bidirectional=True)
            for i in range(layers)
        )
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(2 * hidden, classes)
        self.aux_heads = nn.ModuleList(nn.Linear(2 * hidden, classes) for _ in range(layers - 1))

    def forward_all(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every layer's head, lowest first; the last entry is the classifier's own output."""
        h = frame_features(x, self.motion, self.bones, self.motion2, self.parent).flatten(2)
        if self.input_norm is not None:  # each input feature standardised over the batch's frames (running stats)
            h = self.input_norm(h.transpose(1, 2)).transpose(1, 2)
        outs = []
        for i, lstm in enumerate(self.lstms):
            h, _ = lstm(self.drop(h) if i else h)
            outs.append(h.mean(dim=1))
        return [head(self.drop(o)) for head, o in zip([*self.aux_heads, self.head], outs)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_all(x)[-1]


def spatial_partition(layout: str) -> np.ndarray:
    """ST-GCN's "spatial" adjacency (3, J, J): self, centripetal and centrifugal neighbours of each joint, by hop
    distance to the root (the hip centre), each column-normalised by the joint's degree as in the authors' code."""
    names = layout_joints(layout)
    index = {n: i for i, n in enumerate(names)}
    v = len(names)
    adj = np.eye(v)
    for a, b in BONES[layout]:
        adj[index[a], index[b]] = adj[index[b], index[a]] = 1
    root = index.get("hip_center", 0)
    hops = np.full(v, np.inf)
    hops[root], frontier = 0, [root]
    while frontier:
        nxt = []
        for i in frontier:
            for j in np.nonzero(adj[i])[0]:
                if hops[j] == np.inf:
                    hops[j] = hops[i] + 1
                    nxt.append(j)
        frontier = nxt
    norm = adj / adj.sum(axis=0, keepdims=True)
    parts = np.zeros((3, v, v))
    for i in range(v):
        for j in range(v):
            if adj[j, i]:
                k = 0 if hops[j] == hops[i] else (1 if hops[j] < hops[i] else 2)
                parts[k, j, i] = norm[j, i]
    return parts.astype(np.float32)


class _STGCNBlock(nn.Module):
    def __init__(self, cin: int, cout: int, parts: int, stride: int, dropout: float, residual: bool):
        super().__init__()
        self.parts = parts
        self.gcn = nn.Conv2d(cin, cout * parts, 1)
        self.tcn = nn.Sequential(
            nn.BatchNorm2d(cout),
            nn.ReLU(),
            nn.Conv2d(cout, cout, (9, 1), (stride, 1), (4, 0)),
            nn.BatchNorm2d(cout),
            nn.Dropout(dropout),
        )
        if not residual:
            self.res = None
        elif cin == cout and stride == 1:
            self.res = nn.Identity()
        else:
            self.res = nn.Sequential(nn.Conv2d(cin, cout, 1, (stride, 1)), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        n, _, t, v = x.shape
        y = self.gcn(x).view(n, self.parts, -1, t, v)
        y = torch.einsum("nkctv,kvw->nctw", y, adj)
        y = self.tcn(y)
        return F.relu(y + (self.res(x) if self.res is not None else 0))


class STGCN(nn.Module):
    """Spatial-temporal graph convolution network (Yan et al., AAAI 2018) on one joint layout."""

    def __init__(
        self,
        layout: str,
        classes: int,
        channels=STGCN_CHANNELS,
        dropout: float = 0.5,
        motion=False,
        bones=False,
        motion2=False,
    ):
        super().__init__()
        self.motion, self.bones, self.motion2, self.parent = motion, bones, motion2, parents(layout)
        parts = torch.from_numpy(spatial_partition(layout))
        self.register_buffer("adj", parts)
        v = parts.shape[1]
        c = feature_count(motion, bones, motion2)
        self.data_bn = nn.BatchNorm1d(c * v)
        strides = [2 if i in (3, 6) else 1 for i in range(len(channels))]
        cins = (c, *channels[:-1])
        self.blocks = nn.ModuleList(
            _STGCNBlock(cin, cout, len(parts), s, 0.0 if i == 0 else dropout, residual=i > 0)
            for i, (cin, cout, s) in enumerate(zip(cins, channels, strides))
        )
        self.importance = nn.ParameterList(nn.Parameter(torch.ones_like(parts)) for _ in self.blocks)
        self.head = nn.Linear(channels[-1], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = frame_features(x, self.motion, self.bones, self.motion2, self.parent)
        n, t, v, c = x.shape
        x = self.data_bn(x.permute(0, 2, 3, 1).reshape(n, v * c, t))
        x = x.view(n, v, c, t).permute(0, 2, 3, 1)  # (N, C, T, V)
        for block, weight in zip(self.blocks, self.importance):
            x = block(x, self.adj * weight)
        return self.head(x.mean(dim=(2, 3)))

    def forward_all(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The final logits only: ST-GCN has no intermediate heads (gradient injection is the BLSTM's)."""
        return [self(x)]


class Ensemble(nn.Module):
    """Classifiers trained side by side from different initialisations, read as one: the output is the log of
    their mean softmax (taken in log space, so it stays finite where every member is sure of another class), so
    its argmax is the ensemble's vote and its softmax the mean probabilities."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        log_probs = torch.stack([F.log_softmax(m(x), dim=-1) for m in self.members])
        return torch.logsumexp(log_probs, dim=0) - math.log(len(self.members))


def members(model: nn.Module) -> list[nn.Module]:
    """The classifiers a model is made of: an ``Ensemble``'s members, or the model itself."""
    return list(model.members) if isinstance(model, Ensemble) else [model]


def build_model(config, layout: str, classes: int) -> nn.Module:
    """The classifier ``config.arch`` names (with ``hidden``, ``layers``, ``dropout``, ``channels`` and the input
    features ``motion``, ``bones``, ``motion2``), for skeletons in ``layout`` and ``classes`` actions; with
    ``config.ensemble`` > 1 an ``Ensemble`` of that many, each initialised by the next draws of the generator."""
    if config.ensemble > 1:
        return Ensemble([_single_model(config, layout, classes) for _ in range(config.ensemble)])
    return _single_model(config, layout, classes)


def _single_model(config, layout: str, classes: int) -> nn.Module:
    features = {"motion": config.motion, "bones": config.bones, "motion2": config.motion2}
    if config.arch == "blstm":
        joints = len(layout_joints(layout))
        return BLSTMClassifier(
            joints,
            classes,
            config.hidden,
            config.layers,
            config.dropout,
            input_norm=config.input_norm,
            parent=parents(layout),
            **features,
        )
    return STGCN(layout, classes, tuple(config.channels), config.dropout, **features)
