"""Malformed items: what reading one raises. A reader of many items (the change feed, GetJobs,
the reconciler) that meets one skips it (beamjobs.aws.malformed_items says so) and goes on
serving every other item. A malformed job still answers its own requests, with DATA_LOSS."""

from __future__ import annotations

from typing import Any

from beamjobs.domain.errors import MalformedItem


def malformed(key: Any, error: Exception) -> MalformedItem:
    return MalformedItem(f"the stored item {key} is malformed ({type(error).__name__}: {error})")


# What reading a malformed item raises before it is recognised as one.
DECODING_ERRORS = (KeyError, ValueError, TypeError, AttributeError, ArithmeticError)
