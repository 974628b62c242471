#!/usr/bin/env python3
"""Writes tests/fixtures/legacy-pth/: small files in PyTorch's legacy serialization (the
pre-1.6 layout pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` uses), written by PyTorch
itself with `_use_new_zipfile_serialization=False`, so the toolkit's reader is tested on files
it did not write.

- `state_dict.pth`: a plain state dict (OrderedDict): f32, f64, f16 and i64 tensors, a 0-d
  tensor, and two tensors viewing one storage (`shared.row` is row 1 of `shared.matrix`).
- `nested.pth`: `{"state_dict": ..., "epoch": 3}` with the same f32 tensor.
- `transposed.pth`: a non-contiguous tensor (the reader refuses it with a clear error).

Values follow formulas the test repeats.

    pip install torch && python3 scripts/make-legacy-fixture.py
"""
import collections
import os
import shutil

import torch

out = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "legacy-pth")
shutil.rmtree(out, ignore_errors=True)
os.makedirs(out)

matrix = torch.arange(12, dtype=torch.float32).reshape(3, 4) * 0.5
state = collections.OrderedDict()
state["conv.weight"] = (torch.arange(2 * 3 * 3 * 3, dtype=torch.float32) * 0.25 - 3.0).reshape(2, 3, 3, 3)
state["bn.running_var"] = torch.arange(5, dtype=torch.float64) + 0.125
state["half"] = torch.arange(4, dtype=torch.float16) * 1.5
state["bn.num_batches_tracked"] = torch.tensor(7, dtype=torch.int64)
state["shared.matrix"] = matrix
state["shared.row"] = matrix[1]


def save(obj, name):
    torch.save(obj, os.path.join(out, name), _use_new_zipfile_serialization=False)


save(state, "state_dict.pth")
save({"state_dict": collections.OrderedDict(weight=state["conv.weight"]), "epoch": 3}, "nested.pth")
save(collections.OrderedDict(weight=matrix.t()), "transposed.pth")
