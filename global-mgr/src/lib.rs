//! The global process, memory and storage managers (LegoOS GPM/GMM/GSM, paper §4.6).
//!
//! Not implemented yet; this crate exports nothing.
