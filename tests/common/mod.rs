//! The end-to-end tests' helpers live in the `lego-testkit` crate (`testkit/`); test files say
//! `use lego_testkit as common;`. This re-export keeps `mod common;` working as well.

pub use lego_testkit::*;
