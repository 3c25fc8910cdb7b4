"""Finite-difference gradient checker for hand-written layers."""
