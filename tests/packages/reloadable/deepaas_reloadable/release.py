"""What the tests change from one release of the package to the next."""

RELEASE = "1"
WARM_FAILS = False
