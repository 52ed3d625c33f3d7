"""The bundled GeoIP database, shipped as package data (found with importlib.resources).

`gslb.geoip.DEFAULT_DATABASE` is `dbip-city-lite-compact.mmdb` in this package, so an
installed wheel finds the database wherever site-packages is; README.md here holds the
attribution and how the file is built (build.py, a script: not imported at run time).
"""
