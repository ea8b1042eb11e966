"""NICE (Li & Ji, arXiv:1908.08988): per-pixel L0 gates that explain a classifier and compress images.

    nice = NICE(classifier, NICEConfig(lam=0.5)).fit(train_images)  # amortised mask network
    masks, saliency = nice.explain(images)                           # binary masks and P(gate open)
    result = compress(images, masks, quality=75)                     # mixed-resolution JPEG, real bytes
    print(result.size_ratio)
    scores = compare(classifier, images, predictions, {"nice": saliency},
                     methods=("saliency", "integrated_gradients", "occlusion"))

The gates come from ``gatelab.gates`` (hard concrete, as in the authors' code, or ARM).
"""

from gatelab.evaluation import accuracy, predict
from gatelab.nice.classifiers import (
    ClassifierConfig,
    load_classifier,
    save_classifier,
    small_cnn,
    train_classifier,
)
from gatelab.nice.compress import (
    CompressionResult,
    compress,
    decode_jpeg,
    encode_jpeg,
    jpeg_tables,
    load_jpegs,
    lowres,
    mixed_resolution,
    save_jpegs,
)
from gatelab.nice.images import load_inputs, read_image, write_png
from gatelab.nice.masks import NICE, MaskNetwork, NICEConfig
from gatelab.nice.metrics import BASELINES, CurveResult, attribute, compare, deletion_insertion, keep_top_accuracy

__all__ = [
    "NICE",
    "NICEConfig",
    "MaskNetwork",
    "compress",
    "CompressionResult",
    "mixed_resolution",
    "lowres",
    "encode_jpeg",
    "decode_jpeg",
    "jpeg_tables",
    "save_jpegs",
    "load_jpegs",
    "attribute",
    "BASELINES",
    "deletion_insertion",
    "CurveResult",
    "keep_top_accuracy",
    "compare",
    "small_cnn",
    "ClassifierConfig",
    "train_classifier",
    "accuracy",
    "predict",
    "save_classifier",
    "load_classifier",
    "read_image",
    "load_inputs",
    "write_png",
]
