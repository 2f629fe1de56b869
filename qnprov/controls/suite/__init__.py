"""The packaged testinfra suite: one or more tests per control, tagged with its ID."""
