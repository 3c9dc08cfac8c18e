//! passport-gate's integration tests, one binary: the layer over real TCP (`layer_http`),
//! slow, broken and flooding clients (`faults`), and what the layer allocates
//! (`memory_per_entry`, `passthrough_alloc`). The last two count heap allocations with
//! allocation-counter, whose counters are per thread: the tests running beside them on
//! other threads do not disturb their figures. The real binary's tests are in
//! passport-gate-cli's tests/it.

#[path = "../support/mod.rs"]
mod support;

mod faults;
mod layer_http;
mod memory_per_entry;
mod passthrough_alloc;
