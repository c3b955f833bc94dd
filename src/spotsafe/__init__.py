"""spotsafe."""
