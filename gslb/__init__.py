"""GSLB: an authoritative DNS server that answers with the nearest healthy region.

Import-free on purpose: `regional_lb` imports `gslb.common` without pulling in the DNS server.
"""

__version__ = "0.1.0"
