//! passport-conformance's integration tests, one binary: the committed vectors against the
//! production layer (`conformance`) and the committed fuzzing corpora replayed
//! (`fuzz_corpus`).

mod conformance;
mod fuzz_corpus;
