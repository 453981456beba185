//! Kiln benchmarks. `src/bin/gpt2-124m.rs` times GPT-2 124M at its real shapes with random
//! weights. The criterion suites per kernel family and the portable report runner are still to
//! come (issue 6).
