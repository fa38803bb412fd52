"""Pieces of Tools/bench/run: processes, network paths, contenders, preparation and reports."""
