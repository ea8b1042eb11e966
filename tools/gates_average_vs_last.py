"""Validation error of gates training checkpoints with their last weights and with the moving average.

    python tools/gates_average_vs_last.py RUN/model.safetensors.checkpoint.pt [...]

The L0-ARM authors' script keeps a moving average of the weights but evaluates
the last ones; gatelab evaluates the average. This reads each checkpoint's
validation split (carved from the training images as its run did; the test
split is not read) and scores both, with the test-time gates.
"""

from __future__ import annotations

import argparse

import torch

from gatelab.checkpoint import load_state
from gatelab.evaluation import classifier_scores
from gatelab.gates import summary
from gatelab.gates.average import WeightAverage
from gatelab.gates.train import TrainConfig, build_gated, training_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", help="OUT.checkpoint.pt files of `gatelab gates train`")
    for path in parser.parse_args().checkpoints:
        state = load_state(path, "gates training checkpoint")
        config = TrainConfig.from_dict(state["config"], path)
        model = build_gated(config)
        model.load_state_dict(state["model"])
        _, _, x_val, y_val = training_data(config)
        last = classifier_scores(model, x_val, y_val)["error"]
        average = WeightAverage(model, config.ema)
        average.load_state_dict(state["average"])
        with average.applied():
            averaged = classifier_scores(model, x_val, y_val)["error"]
            kept = summary(model).architecture
        print(f"{path}: validation error, last weights {last:.2f}%, moving average {averaged:.2f}% (kept {kept})")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
