"""Keeping trails current: fetching feeds and archives for `maltrail update`."""
