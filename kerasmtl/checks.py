"""Argument checks shared by tasks, the model and the weighting strategies."""

import math
import numbers


def check_number(value, name, owner, minimum=0.0, allow_minimum=True, integer=False):
    """Returns `value` as a float (or int), or raises a `ValueError` naming it.

    Rejects non-numbers (strings, None, booleans), NaN, infinities and values
    below `minimum` (or equal to it with `allow_minimum=False`).

    Args:
        value: the value given by the user.
        name: the argument's name, as the user typed it (`"loss_weight"`).
        owner: what the argument belongs to, e.g. `"Task 'depth'"` or `"FAMO"`.
        minimum: the smallest valid value, or `None` for no bound.
        allow_minimum: whether `minimum` itself is valid.
        integer: whether the value must be a whole number (returned as `int`).
    """
    bad_type = isinstance(value, bool) or not isinstance(value, numbers.Real)
    if not bad_type:
        try:
            number = float(value)
        except (TypeError, ValueError):
            bad_type = True
    if bad_type:
        raise ValueError(
            f"{owner}: `{name}` must be a number. Received: {name}={value!r} "
            f"of type {type(value).__name__}"
        )
    if not math.isfinite(number):
        raise ValueError(f"{owner}: `{name}` must be finite. Received: {name}={value!r}")
    if minimum is not None and (number < minimum or (number == minimum and not allow_minimum)):
        bound = f">= {minimum}" if allow_minimum else f"> {minimum}"
        raise ValueError(f"{owner}: `{name}` must be {bound}. Received: {name}={value!r}")
    if integer:
        if number != int(number):
            raise ValueError(
                f"{owner}: `{name}` must be a whole number. Received: {name}={value!r}"
            )
        return int(number)
    return number
