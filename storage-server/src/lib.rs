//! The storage component (LegoOS sComponent, paper §4.5): a stateless file server where every
//! request carries the vNode, the full path and the offset.
//!
//! Not implemented yet: until the storage issue lands, `lego run --root DIR` serves a vNode's files
//! from a confined host directory (see `lego_vmm::fs`). This crate exports nothing.
