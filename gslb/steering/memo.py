"""The steering's memo is gslb/common/memo.py's (the GeoIP locator uses it too)  [pure]."""

from gslb.common.memo import Memo

__all__ = ["Memo"]
