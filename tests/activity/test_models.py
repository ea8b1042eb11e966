import numpy as np
import torch

from gatelab.activity.models import (
    STGCN,
    BLSTMClassifier,
    build_model,
    frame_features,
    members,
    parents,
    spatial_partition,
)
from gatelab.activity.skeleton import UTD_MHAD_20
from gatelab.activity.trainer import ActivityConfig, losses


def _lower_layer_grad(model, x, y, config):
    model.zero_grad()
    loss, _ = losses(model, x, y, config)
    loss.backward()
    return model.lstms[0].weight_ih_l0.grad.clone()


def test_gradient_injection_reaches_the_lower_layers_only_when_switched_on():
    torch.manual_seed(0)
    model = BLSTMClassifier(20, 4, hidden=8, layers=3, dropout=0.0)
    x, y = torch.randn(6, 10, 20, 3), torch.randint(0, 4, (6,))
    on = ActivityConfig(gradient_injection=True, injection_weight=0.5)
    off = ActivityConfig(gradient_injection=False)
    main = _lower_layer_grad(model, x, y, off)
    injected = _lower_layer_grad(model, x, y, on) - main  # what the auxiliary losses add
    assert injected.abs().max() > 1e-6 * main.abs().max()
    # the auxiliary heads alone: their loss's gradient on the first layer is non-zero, on the top layer's head zero
    model.zero_grad()
    logits = model.forward_all(x)
    sum(torch.nn.functional.cross_entropy(z, y) for z in logits[:-1]).backward()
    assert model.lstms[0].weight_ih_l0.grad.abs().sum() > 0
    assert model.head.weight.grad is None or model.head.weight.grad.abs().sum() == 0
    torch.testing.assert_close(_lower_layer_grad(model, x, y, off), main)


def test_models_take_any_length_and_give_one_score_per_action():
    x = torch.randn(3, 17, 20, 3)
    assert BLSTMClassifier(20, 5, hidden=8, layers=2)(x).shape == (3, 5)
    assert STGCN("utd-mhad20", 5, channels=(8, 8, 16, 16))(x).shape == (3, 5)


def test_stgcn_spatial_partition_follows_the_kinect_tree():
    parts = spatial_partition("utd-mhad20")
    i = {n: k for k, n in enumerate(UTD_MHAD_20)}
    assert parts[0, i["hip_center"], i["hip_center"]] > 0  # self
    assert parts[1, i["left_hip"], i["left_knee"]] > 0  # left hip is nearer the root than the knee: centripetal
    assert parts[2, i["left_knee"], i["left_hip"]] > 0  # and the knee is centrifugal for the hip
    assert parts[:, i["head"], i["left_foot"]].sum() == 0
    np.testing.assert_allclose(parts.sum(axis=(0, 1)), 1.0, rtol=1e-6)  # each joint's inputs average


def test_input_norm_puts_every_input_feature_on_one_scale():
    """In training mode the batch normalisation removes any per-feature scale and offset of the input (here: a
    scaling of all coordinates, which also scales the displacements, and a shift, which they do not see)."""
    torch.manual_seed(0)
    x = torch.randn(8, 10, 20, 3)
    for input_norm, same in ((True, True), (False, False)):
        model = BLSTMClassifier(20, 4, hidden=8, layers=2, dropout=0.0, motion=True, input_norm=input_norm).train()
        a, b = model(x), model(3 * x + 0.5)
        assert torch.allclose(a, b, atol=1e-4) is same
    assert model.input_norm is None and isinstance(BLSTMClassifier(20, 4, input_norm=True).input_norm, torch.nn.Module)


def test_frame_features_hold_positions_bones_and_displacements_over_one_and_two_frames():
    i = {n: k for k, n in enumerate(UTD_MHAD_20)}
    parent = parents("utd-mhad20")
    assert parent[i["hip_center"]] == i["hip_center"] and parent[i["left_knee"]] == i["left_hip"]
    assert parent[i["left_hand"]] == i["left_wrist"] and parent[i["shoulder_center"]] == i["spine"]
    x = torch.randn(2, 5, 20, 3)
    f = frame_features(x, motion=True, bones=True, motion2=True, parent=parent)
    assert f.shape == (2, 5, 20, 12)
    torch.testing.assert_close(f[..., :3], x)
    torch.testing.assert_close(f[:, 3, :, 3:6], x[:, 3] - x[:, 2])
    torch.testing.assert_close(f[:, :, i["left_knee"], 6:9], x[:, :, i["left_knee"]] - x[:, :, i["left_hip"]])
    assert f[:, :, i["hip_center"], 6:9].abs().max() == 0  # the root has no bone
    torch.testing.assert_close(f[:, 3, :, 9:], x[:, 3] - x[:, 1])
    assert f[:, 0, :, 3:6].abs().max() == 0 and f[:, 1, :, 9:].abs().max() > 0  # before the clip: the first frame
    torch.testing.assert_close(f[:, 1, :, 9:], x[:, 1] - x[:, 0])
    assert frame_features(x, motion=False).shape == (2, 5, 20, 3)
    y = torch.randn(2, 5, 20, 3)  # each feature of a frame depends only on that frame and the two before it
    y[:, 2:] = x[:, 2:]
    torch.testing.assert_close(frame_features(y, True, True, True, parent)[:, 4], f[:, 4], rtol=0, atol=0)
    for model in (
        BLSTMClassifier(20, 4, hidden=8, layers=2, motion=True, bones=True, motion2=True, parent=parent),
        STGCN("utd-mhad20", 4, channels=(8, 8, 16, 16), motion=True, bones=True, motion2=True),
    ):
        assert model(x).shape == (2, 4)


def test_an_ensemble_reads_as_its_members_mean_probabilities_and_one_member_is_the_model_itself():
    torch.manual_seed(0)
    config = ActivityConfig(hidden=8, ensemble=3)
    ensemble = build_model(config, "utd-mhad20", 5).eval()
    parts = members(ensemble)
    assert len(parts) == 3 and not torch.equal(parts[0].head.weight, parts[1].head.weight)  # own initialisations
    x = torch.randn(4, 12, 20, 3)
    mean = torch.stack([torch.softmax(m(x), 1) for m in parts]).mean(0)
    torch.testing.assert_close(torch.softmax(ensemble(x), 1), mean)
    assert torch.equal(ensemble(x).argmax(1), mean.argmax(1))
    with torch.no_grad():  # every member sure of class 0: the others' log-probabilities stay finite, not log(0)
        for m in parts:
            m.head.bias.copy_(torch.tensor([1e4, 0.0, 0.0, 0.0, 0.0]))
    out = ensemble(x)
    assert torch.isfinite(out).all() and torch.allclose(out[:, 1:], out[:, 1:2].expand(-1, 4), atol=50)
    assert (out[:, 1:] < -5e3).all()
    single = build_model(ActivityConfig(hidden=8, ensemble=1), "utd-mhad20", 5)
    assert isinstance(single, BLSTMClassifier) and members(single) == [single]
