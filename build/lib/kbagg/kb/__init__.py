"""kb-python: running `kb` and judging it by its outputs, and its technology table."""
