"""The ``cifar`` space: an airbench-style CIFAR-10 network trained with Nesterov SGD.

Ranges are centred on the airbench94 recipe (batch 1024, lr 11.5 per 1024
examples, momentum 0.85, weight decay 0.0153 per 1024 examples, label
smoothing 0.2), which is also the ``reference`` config every search tries
first. Learning rate and weight decay are "decoupled": they are given per 1024
examples and divided by 1024 * (1 + 1 / (1 - momentum)) before they reach SGD,
so each can be tuned without retuning the others.
"""

# fmt: off
SPACE = {
    "name": "cifar",
    "description": "CIFAR-10, airbench-style conv net, Nesterov SGD with label smoothing",
    "dataset": "cifar10",
    "params": {
        "lr": {
            "kind": "loguniform", "low": 3.0, "high": 30.0, "positive": True,
            "unit": "per 1024 examples, decoupled", "description": "peak learning rate of the warm-up/decay schedule",
        },
        "momentum": {
            "kind": "uniform", "low": 0.8, "high": 0.92, "limits": [0.0, 0.999],
            "unit": "", "description": "Nesterov momentum",
        },
        "weight_decay": {
            "kind": "loguniform", "low": 0.005, "high": 0.05, "limits": [0.0, 10.0],
            "unit": "per 1024 examples, decoupled", "description": "L2 weight decay",
        },
        "batch_size": {
            "kind": "choice", "choices": [512, 1024, 2048], "positive": True,
            "unit": "images", "description": "global batch size (split across workers)",
        },
        "label_smoothing": {
            "kind": "uniform", "low": 0.0, "high": 0.3, "limits": [0.0, 0.99],
            "unit": "", "description": "label smoothing of the cross-entropy loss",
        },
        "width": {
            "kind": "choice", "choices": [0.5, 0.75, 1.0], "positive": True,
            "unit": "x base channels", "description": "width multiplier: airbench (64, 256, 256), resnet18 (64..512)",
        },
        "arch": {
            "kind": "fixed", "value": "airbench", "allowed": ["airbench", "resnet18"],
            "unit": "", "description": "network: airbench (fast conv net) or resnet18 (CIFAR ResNet-18)",
        },
        "flip": {
            "kind": "fixed", "value": "alternate", "allowed": ["alternate", "random", "none"],
            "unit": "", "description": "alternate (each image one way in odd epochs, the other in even), random, none",
        },
        "lookahead": {
            "kind": "fixed", "value": True, "allowed": [True, False],
            "unit": "", "description": "airbench's lookahead: weights pulled to their running average every 5 steps",
        },
        "tta": {
            "kind": "fixed", "value": 2, "allowed": [0, 1, 2],
            "unit": "level", "description": "test-time augmentation at evaluation: 0 none, 1 flips, 2 flips and shifts",
        },
    },
    # airbench94's settings: the first trial of every search, and the benchmarks' default recipe.
    "reference": {
        "lr": 11.5, "momentum": 0.85, "weight_decay": 0.0153, "batch_size": 1024, "label_smoothing": 0.2, "width": 1.0,
    },
    # Fixed for every trial; ``epochs`` is set from --max-epochs. The whitening layer's bias
    # trains for the first 3 epochs only, as in airbench94.
    "constants": {"warmup": 0.23, "translate": 2, "whiten_bias_epochs": 3},
    # Grace period 3: ASHA's first rung judges trials after the lr warm-up (0.23 of 10 epochs),
    # not in the middle of it, where a higher peak lr still looks worse.
    "budget": {"num_samples": 16, "max_epochs": 10, "grace_period": 3, "reduction_factor": 3},
    # Without --gpus-per-trial, trials share each GPU four ways (0.25 GPU each, memory capped
    # to that share): one trial of this small network leaves a GPU idle between its short
    # kernels, its evaluations and its checkpoints. --gpus-per-trial auto measures instead.
    "trials_per_gpu": 4,
    # --smoke-test: a slice of the data, a narrow net, no TTA, ASHA still stopping trials.
    "smoke": {
        "budget": {"num_samples": 6, "max_epochs": 4, "grace_period": 1, "reduction_factor": 2},
        "params": {"width": [0.125, 0.25], "batch_size": [128, 256], "tta": 0},
        "train_size": 4000,
        "val_size": 1000,
        "test_size": 1000,
    },
}
# fmt: on
