"""Fetching Maltrail's trail feeds: declarative feed definitions and the generic parsers behind them."""
