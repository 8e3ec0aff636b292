"""Programs beside the nodes: the front-end runner, process_bag, the benchmarks, and the child processes they start."""
