"""pytest-benchmark suite: conv throughput, GEMM peak, peers and the gradient checker's cost."""
