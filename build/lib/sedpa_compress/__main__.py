"""`python -m sedpa_compress ...` is `sedpa ...`."""

from sedpa_compress.cli import main

main()
