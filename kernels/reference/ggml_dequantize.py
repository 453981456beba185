#!/usr/bin/env python3
"""Dequantizes GGUF blocks with the `gguf` package (ggml's reference, in numpy), for
kernels/tests/ggml_types.rs: for every `TYPE.bin` in the folder given (raw blocks of the GGML
type named TYPE), writes `TYPE.f32`, the values as little-endian float32.

Needs:  python3 -m pip install numpy gguf
"""
import pathlib
import sys

import numpy as np
from gguf import GGMLQuantizationType
from gguf.quants import dequantize


def main():
    folder = pathlib.Path(sys.argv[1])
    for path in sorted(folder.glob("*.bin")):
        kind = GGMLQuantizationType[path.stem]
        data = np.frombuffer(path.read_bytes(), dtype=np.uint8)
        values = dequantize(data, kind).astype("<f4").reshape(-1)
        path.with_suffix(".f32").write_bytes(values.tobytes())


if __name__ == "__main__":
    main()
