"""Reference CNN layers after the equations (1)-(20) of the seed."""
