"""Argument checks shared by the model builders (private)."""


def check_positive_int(value, arg_name):
    """Raises a clear error unless `value` is a positive int; returns it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{arg_name}` must be a positive integer. Received: {arg_name}={value!r}")
    return value


def check_image_shape(shape, arg_name):
    """Returns `shape` as a tuple of three positive ints (height, width, channels)."""
    if (
        not isinstance(shape, (list, tuple))
        or len(shape) != 3
        or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)
    ):
        raise ValueError(
            f"`{arg_name}` must be a tuple of three positive integers "
            f"(height, width, channels). Received: {arg_name}={shape!r}"
        )
    return tuple(shape)


def check_filters(filters, what="Conv-ReLU-MaxPool block"):
    """Returns `filters` as a non-empty tuple of positive ints, one per block."""
    if (
        not isinstance(filters, (list, tuple))
        or not filters
        or not all(isinstance(f, int) and not isinstance(f, bool) and f > 0 for f in filters)
    ):
        raise ValueError(
            "`filters` must be a non-empty tuple of positive integers, one per "
            f"{what}. Received: filters={filters!r}"
        )
    return tuple(filters)


def check_downsampling(filters, shape, arg_name):
    """Raises unless an image of `shape` survives one halving per block."""
    smallest = 2 ** len(filters)
    if min(shape[:2]) < smallest:
        raise ValueError(
            f"{len(filters)} blocks halve the image {len(filters)} times, so the height "
            f"and width must be at least {smallest}. Use a larger image or fewer blocks. "
            f"Received: {arg_name}={shape}, filters={tuple(filters)}"
        )
