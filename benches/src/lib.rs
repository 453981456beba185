//! Kiln benchmarks: criterion microbenchmarks per kernel family and the portable benchmark runner.
//! Nothing lives here yet: the suites and the runner are built in issue 6.
