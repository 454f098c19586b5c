"""`ar-gen bench ...`: speed measurements, printed as tables and written as JSON; never asserted in tests."""
