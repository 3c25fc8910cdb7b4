"""Forward/backward pairs of the reference layers."""
