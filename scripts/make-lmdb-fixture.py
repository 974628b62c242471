#!/usr/bin/env python3
"""Writes tests/fixtures/python-lmdb/: a small latent LMDB in the official layout, written by
python-lmdb (the library the official data-preparation code uses), so that the toolkit's LMDB
reader is tested on a file it did not write itself.

Layout: `length` = decimal count; `z-{i}` = float32 moments (8, 8, 8) as raw bytes (mean for
4 channels, then logvar); `y-{i}` = decimal label. Means follow a formula the test repeats;
logvars are -30, so sampled latents equal 0.18215 * mean to within 4e-7 relative.

    pip install lmdb numpy && python3 scripts/make-lmdb-fixture.py
"""
import os
import shutil

import lmdb
import numpy as np

COUNT, CHANNELS, SIZE = 6, 4, 8
out = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "python-lmdb")
shutil.rmtree(out, ignore_errors=True)
os.makedirs(out)
env = lmdb.open(out, map_size=1 << 20, subdir=True)
with env.begin(write=True) as txn:
    txn.put(b"length", str(COUNT).encode("utf-8"))
    for i in range(COUNT):
        j = np.arange(CHANNELS * SIZE * SIZE, dtype=np.float32)
        mean = ((i + 1) * 0.01 * ((j % 17) - 8)).astype(np.float32)
        logvar = np.full_like(mean, -30.0)
        z = np.concatenate([mean, logvar]).reshape(2 * CHANNELS, SIZE, SIZE)
        txn.put(f"z-{i}".encode("utf-8"), z.tobytes())
        txn.put(f"y-{i}".encode("utf-8"), str(i % 3).encode("utf-8"))
env.close()
os.remove(os.path.join(out, "lock.mdb"))
print("wrote", out, os.path.getsize(os.path.join(out, "data.mdb")), "bytes")
