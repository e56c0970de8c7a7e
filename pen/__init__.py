"""pen: a TCP/UDP load balancer, a Python re-implementation of pen 0.34."""

VERSION = "0.34.1"
