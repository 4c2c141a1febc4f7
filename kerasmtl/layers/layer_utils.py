"""Argument checks shared by the layers of `kerasmtl.layers` (not public API)."""

import keras


def standardize_data_format(data_format):
    """Returns `"channels_last"` or `"channels_first"`; `None` reads the Keras config."""
    if data_format is None:
        data_format = keras.config.image_data_format()
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(
            "`data_format` must be 'channels_last' or 'channels_first'. "
            f"Received: data_format={data_format}"
        )
    return data_format


def standardize_output_size(output_size):
    """Returns `output_size` as a `(height, width)` tuple of positive ints."""
    if isinstance(output_size, int) and not isinstance(output_size, bool):
        output_size = (output_size, output_size)
    if (
        not isinstance(output_size, (list, tuple))
        or len(output_size) != 2
        or not all(isinstance(d, int) and not isinstance(d, bool) for d in output_size)
        or min(output_size) < 1
    ):
        raise ValueError(
            "`output_size` must be a positive integer or a tuple of two positive "
            f"integers (height, width). Received: output_size={output_size}"
        )
    return tuple(output_size)


def channel_axis(data_format):
    """Returns the channel axis of a rank-4 map in `data_format`."""
    return 1 if data_format == "channels_first" else -1


def check_positive_int(value, name):
    """Raises a `ValueError` unless `value` is a positive int; returns it."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value}")
    return value
