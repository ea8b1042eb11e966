"""Export removes pruned units physically and keeps the gated model's deterministic outputs."""

import pytest
import torch

from gatelab.gates import SmallResNet, export, gates, lenet5_caffe, mlp, sparsify, summary, train_step


def _close_some_gates(model, fraction=0.6):
    """Close a random subset of gates, as training would."""
    with torch.no_grad():
        for g in gates(model):
            closed = torch.rand_like(g.phi) < fraction
            g.phi[closed] = -3.0


@pytest.mark.parametrize("estimator", ["arm", "hard_concrete"])
@pytest.mark.parametrize(
    "build,granularity",
    [
        (mlp, "structured"),
        (lenet5_caffe, "structured"),
        (SmallResNet, "structured"),
        (lenet5_caffe, "weight"),
        (SmallResNet, "channel"),
    ],
)
def test_export_matches_gated_model(build, granularity, estimator):
    model = sparsify(build(), granularity, estimator)
    optimizer = torch.optim.Adam(model.parameters(), 1e-2)
    x, y = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
    for _ in range(3):  # moves BatchNorm statistics and weights off their initial values
        train_step(model, x, y, optimizer, dataset_size=100)
    _close_some_gates(model)
    model.eval()
    small = export(model)
    assert type(small) is type(model)
    assert not any(isinstance(m, type(gates(model)[0])) for m in small.modules())
    with torch.no_grad():
        torch.testing.assert_close(small(x), model(x), rtol=1e-4, atol=1e-5)
    if granularity != "weight":
        assert sum(p.numel() for p in small.parameters()) < sum(
            p.numel() for n, p in model.named_parameters() if "phi" not in n
        )


def test_export_removes_the_kept_architecture():
    model = sparsify(lenet5_caffe(), "structured", "arm")
    _close_some_gates(model)
    model(torch.zeros(1, 1, 28, 28))
    kept = [r.kept for r in summary(model).layers]
    small = export(model)
    conv1, conv2, fc1, fc2 = small.conv1, small.conv2, small.fc1, small.fc2
    assert conv1.out_channels == kept[0]
    assert conv2.out_channels <= kept[1]  # an open channel that fc1 never reads is removed too
    assert fc1.out_features == kept[3]  # fc2's open inputs are fc1's kept outputs
    assert fc1.in_features <= kept[1] * 16 and fc2.in_features == kept[3]


def test_residual_channels_are_left_ungated_with_a_reason():
    model = sparsify(SmallResNet(), "channel")
    gated = {g.layer for g in gates(model)}
    assert gated == {"stage1.conv1", "stage2.conv1", "stage3.conv1"}
    skipped = model.gatelab_gates.skipped
    assert "stage1.conv2" in skipped and "residual" in skipped["stage1.conv2"]
    # the BatchNorm after a gated conv is gated by the same gate, so a closed channel is exactly zero
    bn = model.stage1.bn1
    assert bn.parametrizations.weight[0].gate is model.stage1.conv1.parametrizations.weight[0].gate


def test_summary_counts_parameters_and_flops():
    model = sparsify(mlp(), "structured", "arm")
    with torch.no_grad():
        gates(model)[1].phi[:150] = -3.0  # close half of fc2's inputs
        gates(model)[1].phi[150:] = 3.0
    model(torch.zeros(1, 1, 28, 28))
    s = summary(model)
    assert s.layers[1].kept == 150 and s.layers[1].total == 300
    assert s.params_dense == 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10
    assert s.flops_dense == 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10
    assert s.params_kept < s.params_dense
    assert "architecture" in str(s)
