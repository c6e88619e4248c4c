"""Hyperparameter search for PyTorch on Ray Tune: ASHA, checkpoints, MLflow, a leaderboard.

python run_tune.py --space cifar                         # the full default search
python run_tune.py --space cifar --smoke-test            # tiny budget, a slice of the data
python run_tune.py --space cifar --num-samples 32 --max-epochs 16 --gpus-per-trial 0.25
python run_tune.py --list-spaces
python run_tune.py --name cifar-20261123-101500 --resume # continue an interrupted search
ray job submit --working-dir . -- python run_tune.py --space cifar   # on a Ray cluster
"""

import sys

from tuner.cli import main

if __name__ == "__main__":
    sys.exit(main())
