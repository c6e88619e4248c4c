"""Write a synthetic table to try the tabular example on: house prices from numeric and text columns.

    python examples/tabular/make_data.py --out data/houses.csv [--rows 2000] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd


def houses(rows: int, *, seed: int) -> pd.DataFrame:
    """``price`` depends on area, rooms, age and the town (a text column), with noise."""
    rng = np.random.default_rng(seed)
    towns = np.array(["north", "south", "east", "west"])
    town = towns[rng.integers(0, len(towns), rows)]
    area = rng.uniform(30, 200, rows)
    rooms = rng.integers(1, 7, rows)
    age = rng.uniform(0, 80, rows)
    premium = pd.Series(town).map({"north": 1.3, "south": 0.9, "east": 1.0, "west": 1.1}).to_numpy()
    price = (area * 2.5 + rooms * 10 - age * 0.8) * premium + rng.normal(0, 15, rows)
    return pd.DataFrame({"area": area, "rooms": rooms, "age": age, "town": town, "price": price})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="the CSV file to write")
    p.add_argument("--rows", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    houses(args.rows, seed=args.seed).to_csv(out, index=False)
    print(f"wrote {out} ({args.rows} rows)")


if __name__ == "__main__":
    main()
