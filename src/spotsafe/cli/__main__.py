"""``python -m spotsafe.cli``."""

from spotsafe.cli import main

main()
