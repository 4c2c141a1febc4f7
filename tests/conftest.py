import os

# Before anything imports TensorFlow: keep its C++ logging out of test output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "backend_only(*backends, reason): run only on these Keras backends (the reason says why)",
    )


def pytest_collection_modifyitems(config, items):
    backend = keras.backend.backend()
    for item in items:
        marker = item.get_closest_marker("backend_only")
        if marker is None or backend in marker.args:
            continue
        reason = marker.kwargs.get("reason")
        if not reason:
            raise pytest.UsageError(f"{item.nodeid}: backend_only needs a reason=")
        item.add_marker(pytest.mark.skip(reason=f"{'/'.join(marker.args)} only: {reason}"))
