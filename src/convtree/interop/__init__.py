"""Import and export of other chat applications' conversation formats."""
