"""Columns (name -> numpy array) written as a CSV or Parquet file with pyarrow, atomically: `simkit sweep`
and `simkit optimize` hand their results over as columns, never as a pandas frame (building one and
formatting it with pandas took two thirds of a 98,304-row sweep). The format follows the file's suffix:
.parquet (or .pq) writes Parquet, anything else CSV."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

PARQUET_SUFFIXES = (".parquet", ".pq")


def to_arrow(columns: dict[str, np.ndarray]):
    """A pyarrow Table. Object columns are text; a masked array's masked cells are null. Built from the
    numpy buffers directly: pa.array() would import pandas (a third of a second) to inspect its input."""
    import pyarrow as pa

    return pa.table({name: _arrow(values) for name, values in columns.items()})


def _arrow(values: np.ndarray):
    import pyarrow as pa

    n = len(values)
    if isinstance(values, np.ma.MaskedArray):
        valid = pa.py_buffer(np.packbits(~np.ma.getmaskarray(values), bitorder="little"))
        values = np.ma.getdata(values)
    else:
        valid = None
    if values.dtype == object:
        return _text(values)
    if values.dtype == bool:
        return pa.Array.from_buffers(pa.bool_(), n, [valid, pa.py_buffer(np.packbits(values, bitorder="little"))])
    kind = {"f": pa.float64(), "i": pa.int64(), "u": pa.int64()}[values.dtype.kind]
    data = values.astype(np.float64 if values.dtype.kind == "f" else np.int64)
    return pa.Array.from_buffers(kind, n, [valid, pa.py_buffer(np.ascontiguousarray(data))])


def _text(values: np.ndarray):
    """A string column from a numpy object array of few distinct values (reasons, choices)."""
    import pyarrow as pa

    lookup: dict = {}
    codes = np.fromiter((lookup.setdefault(str(v), len(lookup)) for v in values), dtype=np.int32, count=len(values))
    missing = np.fromiter((v is None for v in values), dtype=bool, count=len(values))
    valid = pa.py_buffer(np.packbits(~missing, bitorder="little")) if missing.any() else None
    words = [w.encode() for w in lookup]
    offsets = np.zeros(len(words) + 1, dtype=np.int32)
    np.cumsum([len(w) for w in words], out=offsets[1:])
    distinct = pa.Array.from_buffers(pa.string(), len(words), [None, pa.py_buffer(offsets),
                                                               pa.py_buffer(b"".join(words))])
    index = pa.Array.from_buffers(pa.int32(), len(codes), [valid, pa.py_buffer(codes)])
    return pa.DictionaryArray.from_arrays(index, distinct).dictionary_decode()


def write_columns(path: str | os.PathLike, columns: dict[str, np.ndarray]) -> str:
    """Write `columns` to `path` (Parquet or CSV by suffix) so that readers never see a partial file
    (core.files.write_atomic: the user's umask, no temporary file left on Ctrl-C); returns the format
    written ('parquet' or 'csv')."""
    import pyarrow as pa

    from simkit.core.files import write_atomic

    table = to_arrow(columns)
    kind = "parquet" if Path(path).suffix.lower() in PARQUET_SUFFIXES else "csv"
    sink = pa.BufferOutputStream()
    if kind == "parquet":
        import pyarrow.parquet as pq

        # dictionary pages only for the columns that repeat (varied keys, reasons): floats rarely do
        repeat = [f.name for f in table.schema if not str(f.type).startswith(("double", "float"))]
        pq.write_table(table, sink, use_dictionary=repeat)
    else:
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, sink, pacsv.WriteOptions(quoting_style="needed"))
    write_atomic(path, sink.getvalue().to_pybytes())
    return kind
