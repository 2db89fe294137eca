"""`maltrail update`: trail feeds, fetching, sanity filters, the fail-closed build and its state."""
