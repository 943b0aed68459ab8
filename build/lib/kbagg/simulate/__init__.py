"""The deterministic simulator: the demo data set and the tests' ground truth."""
