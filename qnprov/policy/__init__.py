"""The decision as code: rule bundle, detectors, engine (issue 4)."""
