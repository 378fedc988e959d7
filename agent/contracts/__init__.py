"""What crosses a process boundary: the control plane and the workers both read these, so they import
neither torch nor anything else of either side (the import check in tests/test_layout.py holds them
to it)."""
