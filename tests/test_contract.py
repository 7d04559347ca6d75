"""The two halves share only the .onnx contract: their two copies of its names must agree."""

import export.contract
import runtime.contract

NAMES = [name for name in dir(runtime.contract) if name.isupper()]


def test_export_and_runtime_use_the_same_names():
    assert NAMES and NAMES == [name for name in dir(export.contract) if name.isupper()]
    for name in NAMES:
        assert getattr(export.contract, name) == getattr(runtime.contract, name), name
