"""The recluster's neighbour search alone, in memory, at any number of faces: seeded identity
vectors (services/photoembed/seeding.py's distances, 45 faces a person), the persons as cells with
a share of the faces put with a random person, timed; with --check, compared with all pairs.

    python bench/neighbours.py --faces 900000              # 168 s here (2026-12-04)
    python bench/neighbours.py --faces 20000 --check       # and the same answer as all pairs
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from photoembed.faces.grouping import NEIGHBOURS
from photoembed.faces.regrouping import nearest_neighbours
from photoembed.seeding import FACE_CENTRE_SPREAD, FACE_DIM, FACE_NOISE

MATCH_DISTANCE = 0.5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--faces", type=int, default=100_000)
    parser.add_argument("--misplaced", type=float, default=0.05)
    parser.add_argument("--check", action="store_true", help="compare with all pairs")
    args = parser.parse_args()
    rng = np.random.default_rng(5)
    people = max(1, args.faces // 45)
    centres = FACE_CENTRE_SPREAD * rng.standard_normal((people, FACE_DIM), np.float32)
    person = rng.integers(0, people, args.faces)
    noise = FACE_NOISE * rng.standard_normal((args.faces, FACE_DIM), np.float32)
    vectors = (centres[person] + noise).astype(np.float32)
    photos = rng.integers(0, max(1, int(args.faces / 0.9)), args.faces)
    cells = person + 1
    misplaced = rng.random(args.faces) < args.misplaced
    cells[misplaced] = rng.integers(0, people + 1, int(misplaced.sum()))
    began = time.perf_counter()
    found = {
        face: set(cols.tolist())
        for face, cols, _ in nearest_neighbours(vectors, photos, MATCH_DISTANCE, cells)
    }
    print(f"{args.faces} faces, {people} people: {time.perf_counter() - began:.1f} s", flush=True)
    if args.check:
        squares = np.einsum("ij,ij->i", vectors, vectors)
        differ = 0
        for start in range(0, args.faces, 1024):
            block = np.arange(start, min(args.faces, start + 1024))
            d2 = squares[block, None] + squares[None, :] - 2.0 * (vectors[block] @ vectors.T)
            for row, face in enumerate(block):
                near = np.flatnonzero((d2[row] <= MATCH_DISTANCE**2) & (photos != photos[face]))
                nearest = near[np.argsort(d2[row, near], kind="stable")][:NEIGHBOURS]
                differ += set(nearest.tolist()) != found[int(face)]
        print(f"faces whose neighbours differ from all pairs': {differ}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
