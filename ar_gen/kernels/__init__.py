"""Attention kernels: the group-id mask, Pallas flash and decode attention with their references, and dispatch."""
